/**
 * Where a CNI call's time goes: the plugin's WEFT_TRACE line (src/cni/trace.ts) of every timed
 * weft-net call, reduced to medians per step. No timing assertions here.
 */
import { markdownTable, fmt, median } from './stats';

export interface TraceLine {
  verb: string;
  /** Milliseconds since the process started, at each mark. */
  marks: Record<string, number>;
  /** The router's steps in milliseconds. */
  router?: Record<string, number>;
}

/** The trace line of a plugin's stderr, if there is one. */
export function parseTrace(stderr: string): TraceLine | undefined {
  for (const line of stderr.split('\n').reverse()) {
    if (!line.startsWith('{"weftTrace"')) continue;
    try {
      return (JSON.parse(line) as { weftTrace: TraceLine }).weftTrace;
    } catch {
      return undefined;
    }
  }
  return undefined;
}

export interface Traced {
  trace: TraceLine;
  /** Wall time of the whole call, as the bench measured it. */
  wallMs: number;
}

interface Step {
  label: string;
  of: (t: Traced) => number | undefined;
}

const d = (t: Traced, a: string, b: string) => (t.trace.marks[a] !== undefined && t.trace.marks[b] !== undefined ? t.trace.marks[b]! - t.trace.marks[a]! : undefined);
const r = (k: string) => (t: Traced) => t.trace.router?.[k];

/** The steps, in the order they happen; indented ones are parts of the one above. */
export const STEPS: Step[] = [
  { label: 'whole call, wall (as timed by the bench)', of: (t) => t.wallMs },
  { label: 'Node\'s clock start to plugin main (Node start-up, snapshot deserialised)', of: (t) => t.trace.marks.main },
  { label: 'env + config parsed and validated', of: (t) => d(t, 'main', 'parsed') },
  { label: 'request prepared (incl. netns check)', of: (t) => d(t, 'parsed', 'request') },
  { label: 'router round trip (connect, request, answer)', of: (t) => d(t, 'request', 'answer') },
  { label: '  in the router, all steps', of: r('total') },
  { label: '    bridge (cached)', of: r('bridge') },
  { label: '    host end: warm `ip -batch` (ADD: veth pair; DEL: link down)', of: r('hostLink') },
  { label: '    allocate (memory + fsync)', of: r('allocate') },
  { label: '    release (memory + fsync)', of: r('release') },
  { label: '      of which fsync (group commit)', of: r('fsync') },
  { label: '    pod end: warm `ip -n NETNS -batch` (address, up, route)', of: r('podLink') },
  { label: '    CHECK: host and pod `ip -json` reads, in parallel', of: r('inspect') },
  { label: '  socket and JSON, both ways (round trip less router)', of: (t) => (t.trace.router?.total !== undefined ? (d(t, 'request', 'answer') ?? NaN) - t.trace.router.total : undefined) },
  { label: 'result printed', of: (t) => d(t, 'answer', 'end') },
  { label: 'outside Node\'s clock: exec and loader before it, exit after the end mark, the bench\'s spawn and nsenter (wall less the end mark)', of: (t) => t.wallMs - (t.trace.marks.end ?? NaN) },
];

/** A table: one row per step, one column per verb, medians in ms; steps no verb has are left out. */
export function breakdownTable(byVerb: Record<string, Traced[]>): string {
  const verbs = Object.keys(byVerb).filter((v) => byVerb[v]!.length);
  const rows: string[][] = [];
  for (const s of STEPS) {
    const cells = verbs.map((v) => {
      const xs = byVerb[v]!.map(s.of).filter((x): x is number => x !== undefined && Number.isFinite(x));
      return xs.length ? fmt(median(xs), 2) : '';
    });
    if (cells.some(Boolean)) rows.push([s.label.replace(/^( +)/, (m) => '\u00a0'.repeat(m.length * 2)), ...cells]);
  }
  return markdownTable(['step (medians, ms)', ...verbs.map((v) => `${v} [n=${byVerb[v]!.length}]`)], rows);
}
