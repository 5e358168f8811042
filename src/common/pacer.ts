/**
 * The rhythm of a level-triggered pass (repair, reprogramming): often while things change,
 * seldom when nothing does.
 *
 * Why it is this way: a pass compares the kernel with what should be there, and reading the
 * kernel costs a handful of processes. Run every few seconds forever, those reads were most of
 * an idle router's CPU. So a pass that finds nothing to do doubles the gap to the next one, up
 * to `idleMs`, and a change (`poke`: the kernel reported one, or the part's own inputs moved)
 * brings the next pass back to `busyMs` after the last. Something removed by hand is put back
 * as soon as before when the change is reported, and within `idleMs` when it is not.
 */
import type { Startable } from './lifecycle';

export interface PacerOptions {
  /** Gap between passes while things change (and the first gap after start). */
  busyMs: number;
  /** Longest gap when nothing changes; at or below `busyMs`, every gap is `busyMs`. */
  idleMs: number;
  /** Least delay from a poke to its pass, so a burst of changes is one pass (default 100 ms). */
  settleMs?: number;
}

/**
 * Runs `pass` on the schedule above. `pass` resolves to true when it found something to do
 * (the next gap stays `busyMs`). Passes never overlap; a failed pass counts as busy.
 */
export class Pacer implements Startable {
  private timer: NodeJS.Timeout | undefined;
  private due = 0;
  private gap: number;
  private lastStart = -Infinity;
  private running: Promise<void> | undefined;
  private poked = false;
  private stopped = true;

  constructor(
    private readonly pass: () => Promise<boolean>,
    private readonly o: PacerOptions,
  ) {
    this.gap = o.busyMs;
  }

  async start(): Promise<void> {
    this.stopped = false;
    this.lastStart = Date.now();
    this.arm(this.o.busyMs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** The gap the next pass is planned after the last one (for status and tests). */
  get nextGapMs(): number {
    return this.gap;
  }

  /** Something changed: the next pass comes `settleMs` from now, and no sooner than `busyMs` after the last began. */
  poke(): void {
    if (this.stopped) return;
    this.poked = true;
    this.gap = this.o.busyMs;
    if (this.running) return; // planned when it ends
    const at = Math.max(Date.now() + (this.o.settleMs ?? 100), this.lastStart + this.o.busyMs);
    if (at < this.due) this.arm(at - Date.now());
  }

  private arm(delayMs: number): void {
    clearTimeout(this.timer);
    this.due = Date.now() + delayMs;
    this.timer = setTimeout(() => void this.run(), Math.max(0, delayMs));
    this.timer.unref();
  }

  private async run(): Promise<void> {
    this.timer = undefined;
    if (this.stopped) return;
    this.lastStart = Date.now();
    this.poked = false;
    let busy = true;
    this.running = this.pass().then(
      (b) => void (busy = b),
      () => undefined,
    );
    await this.running;
    this.running = undefined;
    if (this.stopped) return;
    const quiet = !busy && !this.poked;
    this.gap = quiet ? Math.min(Math.max(this.o.idleMs, this.o.busyMs), this.gap * 2) : this.o.busyMs;
    const at = this.lastStart + this.gap;
    this.arm(this.poked ? Math.max(at, Date.now() + (this.o.settleMs ?? 100)) - Date.now() : at - Date.now());
  }
}
