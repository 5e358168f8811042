/**
 * What a suite needs to run: root, programs on PATH, files, the built executables.
 *
 * On a developer's machine a missing need skips the suite and says why. Under CI (`CI` set to
 * anything but "", "0" or "false") skipping would turn a broken install step into green, so a
 * missing need is a failure that names what is missing.
 */
import { accessSync, constants, existsSync } from 'node:fs';
import { delimiter, join, resolve } from 'node:path';

export const ROOT = resolve(__dirname, '../..');
export const WEFT = join(ROOT, 'dist/weft');
export const WEFT_NET = join(ROOT, 'dist/weft-net');

export interface Needs {
  /** Runs as root (network namespaces, iptables). */
  root?: boolean;
  /** dist/weft and dist/weft-net exist (./build.sh). */
  built?: boolean;
  /** Programs that must be on PATH. */
  tools?: readonly string[];
  /** Files that must exist (plugins, images). */
  files?: readonly string[];
}

/** The parts of the machine the check reads; tests of this helper pass their own. */
export interface Machine {
  env: NodeJS.ProcessEnv;
  isRoot: boolean;
  exists(path: string): boolean;
}

const here: Machine = { env: process.env, isRoot: process.getuid?.() === 0, exists: existsSync };

/** Finds an executable on the PATH of `env`, as spawn would. */
export function which(cmd: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  for (const d of (env.PATH ?? '').split(delimiter)) {
    if (!d) continue;
    const p = join(d, cmd);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  return undefined;
}

/** What of `n` is missing, each named as a person would install it. */
export function missingNeeds(n: Needs, m: Machine = here): string[] {
  const out: string[] = [];
  if (n.root && !m.isRoot) out.push('root');
  if (n.built) for (const f of [WEFT, WEFT_NET]) if (!m.exists(f)) out.push(`${f} (run ./build.sh)`);
  for (const t of n.tools ?? []) if (!which(t, m.env)) out.push(`${t} (not on PATH)`);
  for (const f of n.files ?? []) if (!m.exists(f)) out.push(f);
  return out;
}

export function inCi(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env.CI;
  return v !== undefined && v !== '' && v !== '0' && v.toLowerCase() !== 'false';
}

/** Thrown under CI when a suite's needs are missing. */
export class MissingNeedError extends Error {}

/**
 * The skip reason for a suite (pass it as `{ skip }` or to `t.skip`), or undefined when all
 * it needs is here. Under CI a missing need throws instead, naming it: at the top of a test
 * file that fails the file, inside a test it fails the test.
 */
export function needs(n: Needs, m: Machine = here): string | undefined {
  const missing = missingNeeds(n, m);
  if (missing.length === 0) return undefined;
  const reason = `needs ${missing.join(', ')}`;
  if (inCi(m.env)) throw new MissingNeedError(`CI is set and this suite ${reason}: install it (./build.sh --deps) instead of skipping`);
  return reason;
}

/** What the suites in namespaces need: root, the executables, iproute2, nsenter, iptables, ping. */
export const NETNS: Needs = { root: true, built: true, tools: ['ip', 'nsenter', 'iptables', 'ping'] };
