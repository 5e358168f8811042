declare module 'parse-prometheus-text-format' {
  /** Parses Prometheus text exposition format; throws on malformed input. */
  export default function parse(text: string): unknown[];
}
