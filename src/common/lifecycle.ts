/**
 * Parts of the router start and stop through one small contract (js-libp2p's Startable): the
 * composition root constructs each part with the components it declares, then starts them in
 * order and stops them in reverse.
 */

export interface Startable {
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** Repeating timers a part owns; unref'd, so they never keep a process alive. */
export class Timers {
  private readonly timers = new Set<NodeJS.Timeout>();

  every(ms: number, fn: () => void): void {
    const t = setInterval(fn, ms);
    t.unref();
    this.timers.add(t);
  }

  /** A one-shot timer, cancelled with the rest. */
  after(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    t.unref();
    this.timers.add(t);
  }

  clear(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleepUnless(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
