/**
 * The one executable: the CNI plugin `weft-net` and the router and CLI `weft`, chosen by the
 * name it is invoked under (argv[0]: a hard link or symlink named weft-net), as multi-call
 * binaries are.
 *
 * Why it is this way: the plugin starts once per CNI call, so its modules are initialised at
 * build time into a V8 startup snapshot and nothing else is. The router and CLI are a bundle of
 * their own, carried in the executable as an asset and compiled only when the executable runs
 * as `weft`, so they cost the plugin's start-up nothing.
 */
import { basename } from 'node:path';
import * as v8 from 'node:v8';
import { warmUp } from '../cni/warm-up';
import { runPluginProcess } from './weft-net';
import { withRouterFlags } from './daemon-flags';
import { inSea, runAssetModule } from '../common/sea-module';

export const PLUGIN_NAME = 'weft-net';
/** The asset holding the router and CLI bundle (build.sh puts it there). */
export const CLI_ASSET = 'weft.js';
/** V8's code cache for it, made by build.sh after a run of `weft version` (empty or stale: compile afresh). */
export const CLI_CACHE_ASSET = 'weft.cache';

/** The name this process was invoked under: argv[0] as the caller gave it, not the resolved executable. */
export function invokedAs(argv0: string = process.argv0): string {
  return basename(argv0 || process.execPath);
}

/** The subcommand of `weft [--socket PATH] COMMAND ...`. */
export function subcommand(args: readonly string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--socket') i++;
    else if (!a.startsWith('-')) return a;
  }
  return undefined;
}

/**
 * The executable starts with --no-rehash-snapshot (build.sh): V8 then keeps the hash seed baked
 * into the snapshot instead of rehashing every table of it, which is a sizeable part of a CNI
 * call's start-up. A fixed seed is harmless in a process that lives for one call on input from
 * the runtime, but a daemon reading the network should hash with a seed of its own: the router
 * replaces itself (same pid) with a run that rehashes.
 */
function rehashForDaemon(): void {
  const args = process.argv.slice(2);
  if (subcommand(args) !== 'router' || !process.execArgv.includes('--no-rehash-snapshot') || process.execArgv.includes('--rehash-snapshot')) return;
  // Node options given with --node-options (e.g. --cpu-prof) carry over; values cannot hold spaces
  const keep = withRouterFlags(process.execArgv.filter((a) => a !== '--no-rehash-snapshot'));
  process.execve!(process.execPath, [process.argv0, `--node-options=${[...keep, '--rehash-snapshot'].join(' ')}`, ...args], process.env);
}

/* eslint-disable @typescript-eslint/no-require-imports */
function runCli(): void {
  if (!inSea()) {
    // from source (tsx): the CLI entry is next to this file (createRequire keeps bundlers out)
    const { createRequire } = require('node:module') as typeof import('node:module');
    createRequire(__filename)('./weft');
    return;
  }
  rehashForDaemon();
  const { script } = runAssetModule(CLI_ASSET, CLI_CACHE_ASSET);
  // build.sh only: V8 accepts a code cache made by this executable itself, so it runs it once
  // (`weft version`) and asks for the cache, taken after the run so start-up's functions are in it
  const out = process.env.WEFT_BUILD_CODE_CACHE;
  if (out) process.once('exit', () => require('node:fs').writeFileSync(out, script.createCachedData()));
}

function main(): void {
  if (invokedAs() === PLUGIN_NAME) runPluginProcess();
  else runCli();
}

// Built into a V8 startup snapshot (build.sh), the modules above are initialised at build
// time and every call starts from the ready heap; run plainly otherwise.
if (v8.startupSnapshot?.isBuildingSnapshot()) {
  // the plugin's code paths compiled now ship as bytecode in the snapshot (src/cni/warm-up.ts)
  warmUp();
  v8.startupSnapshot.setDeserializeMainFunction(main);
} else main();
