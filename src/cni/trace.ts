/**
 * Where a CNI call's time goes, for `npm run bench`: with WEFT_TRACE=1 in its environment the
 * plugin writes one line of JSON to stderr, `{"weftTrace":{...}}`, with the milliseconds since
 * the process started at each mark (Node's start-up is the first) and the router's own steps.
 * Without it nothing is recorded. Stderr is the runtime's log, never the CNI result.
 */
import type { Timing } from '../common/api';

export class Trace {
  readonly on: boolean;
  private readonly marks: Record<string, number> = {};
  private routerTiming: Timing | undefined;

  constructor(env: NodeJS.ProcessEnv) {
    this.on = env.WEFT_TRACE === '1';
  }

  /** Records the time since the process started (performance.now() counts from there). */
  mark(name: string): void {
    if (this.on) this.marks[name] = performance.now();
  }

  router(t: Timing | undefined): void {
    if (this.on && t) this.routerTiming = t;
  }

  /** The trace line, or undefined when tracing is off. */
  line(verb: string | undefined): string | undefined {
    if (!this.on) return undefined;
    this.mark('end');
    const round = (o: Record<string, number>) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, Math.round(v * 1000) / 1000]));
    return JSON.stringify({ weftTrace: { verb, marks: round(this.marks), ...(this.routerTiming ? { router: round(this.routerTiming) } : {}) } }) + '\n';
  }
}
