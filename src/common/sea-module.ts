/**
 * CommonJS bundles the single executable carries as assets (build.sh), compiled and run when
 * first needed.
 *
 * Why it is this way: what an asset holds costs nothing until it is run: neither start-up time
 * nor memory (its pages of the executable are never read). So the router and CLI ride along for
 * the plugin's sake, and the Kubernetes client, most of the bytes of the router's code, for the
 * sake of routers that do not run in Kubernetes.
 */
/* eslint-disable @typescript-eslint/no-require-imports */
import type { Script } from 'node:vm';

/** Whether this process is the single executable (false under tsx or plain node). */
export function inSea(): boolean {
  return (require('node:sea') as typeof import('node:sea')).isSea();
}

/**
 * Runs asset `name` as a CommonJS module (its `require` resolves as the executable's would)
 * and returns its exports, with the script for callers that make a code cache of it.
 * `cacheAsset` names V8's code cache for it; an empty or stale one is ignored.
 */
export function runAssetModule(name: string, cacheAsset?: string): { exports: unknown; script: Script } {
  const sea = require('node:sea') as typeof import('node:sea');
  const vm = require('node:vm') as typeof import('node:vm');
  const { createRequire } = require('node:module') as typeof import('node:module');
  const { dirname } = require('node:path') as typeof import('node:path');
  let cachedData: Buffer | undefined;
  if (cacheAsset) {
    try {
      cachedData = Buffer.from(sea.getRawAsset(cacheAsset) as ArrayBuffer);
    } catch {
      cachedData = undefined;
    }
    if (!cachedData?.length) cachedData = undefined;
  }
  const code = `(function (exports, require, module, __filename, __dirname) {${sea.getAsset(name, 'utf8')}\n})`;
  const script = new vm.Script(code, { filename: name, cachedData });
  const wrapper = script.runInThisContext() as (...a: unknown[]) => void;
  const mod = { exports: {} as unknown };
  wrapper.call(mod.exports, mod.exports, createRequire(process.execPath), mod, process.execPath, dirname(process.execPath));
  return { exports: mod.exports, script };
}
