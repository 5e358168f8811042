/**
 * Reads shared within one pass of checks. A repair pass asks the host's part and each overlay
 * whether their devices and rules are still there, and each would run its own `ip` or
 * `iptables-save`; inside `sharedReads` the first read of a kind loads everything of that kind
 * once (every link, every table) and the others take their part of it. A write made through
 * src/sys within the pass drops what was read of its kind. Reads outside a pass, and in the
 * next one, load afresh, so nothing stale outlives the pass.
 */
import type { AsyncLocalStorage } from 'node:async_hooks';
import { nodeAsyncHooks } from '../common/lazy';

/** The kinds of reads shared: each key starts with its kind's prefix, then names the namespace. */
export const LINKS = 'links:';
export const RULES = 'iptables:';

/** Made on the first pass (the plugin, which never runs one, loads this file in its snapshot). */
let scope: AsyncLocalStorage<Map<string, Promise<unknown>>> | undefined;

/** Runs `fn` with its reads shared (see above). */
export function sharedReads<T>(fn: () => Promise<T>): Promise<T> {
  scope ??= new (nodeAsyncHooks().AsyncLocalStorage)();
  return scope.run(new Map(), fn);
}

/** Inside `sharedReads`: `load()` once per key, shared (a failed load is not kept); outside: undefined, and the caller reads as usual. */
export function shared<T>(key: string, load: () => Promise<T>): Promise<T> | undefined {
  const m = scope?.getStore();
  if (!m) return undefined;
  let p = m.get(key) as Promise<T> | undefined;
  if (!p) {
    const loading = load();
    m.set(key, loading);
    loading.catch(() => m.get(key) === loading && m.delete(key));
    p = loading;
  }
  return p;
}

/** After a write: drops what the current pass read under keys starting with `prefix`. */
export function dropShared(prefix: string): void {
  const m = scope?.getStore();
  if (m) for (const k of [...m.keys()]) if (k.startsWith(prefix)) m.delete(k);
}
