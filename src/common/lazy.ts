/**
 * Built-in modules the plugin loads on first use rather than at start. weft-net ships as a V8
 * startup snapshot (its modules initialised at build time, ~15 ms saved on every CNI call),
 * and these create native handles that a snapshot cannot hold.
 */
/* eslint-disable @typescript-eslint/no-require-imports */
function once<T>(load: () => T): () => T {
  let v: T | undefined;
  return () => (v ??= load());
}

export const nodeHttp = once(() => require('node:http') as typeof import('node:http'));
export const nodeChildProcess = once(() => require('node:child_process') as typeof import('node:child_process'));
export const nodeCrypto = once(() => require('node:crypto') as typeof import('node:crypto'));
export const nodeAsyncHooks = once(() => require('node:async_hooks') as typeof import('node:async_hooks'));
