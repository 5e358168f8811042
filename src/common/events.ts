/** Events named and typed in one map (js-libp2p's TypedEventTarget idea), on Node's EventEmitter. */
import { EventEmitter } from 'node:events';

export class TypedEmitter<E extends { [K in keyof E]: unknown[] }> {
  private readonly ee = new EventEmitter();

  constructor() {
    this.ee.setMaxListeners(50);
  }

  /** Subscribes; returns the unsubscribe function. */
  on<K extends keyof E & string>(event: K, fn: (...args: E[K]) => void): () => void {
    const f = fn as (...a: unknown[]) => void;
    this.ee.on(event, f);
    return () => this.ee.off(event, f);
  }

  emit<K extends keyof E & string>(event: K, ...args: E[K]): void {
    this.ee.emit(event, ...args);
  }
}
