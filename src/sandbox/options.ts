/** Options of `weft sandbox`, their limits, and where the sandbox keeps things. */
import { defaultPlugin, defaultWeftBinary } from '../common/binaries';
import { accessSync, constants, existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ConfigError } from '../common/errors';
import { parseCidr } from '../common/ip';
import { readPassword } from '../router/options';

export const DEFAULT_PREFIX = 'wsb';
export const SANDBOX_ROOT = '/run/weft-sandbox';
export const MAX_HOSTS = 64;
export const MAX_PODS = 64;
/** VXLAN over IPv4 costs 50 bytes and a pod needs at least 576. */
export const MIN_UNDERLAY_MTU = 626;
export const MAX_UNDERLAY_MTU = 65535;
export const DEFAULT_DEADLINE_MS = 60_000;

/** The underlay: 172.30.0.0/24 on one bridge; host i is 172.30.0.(10+i). */
export const UNDERLAY_PREFIXLEN = 24;
export const hostAddress = (i: number): string => `172.30.0.${10 + i}`;

export interface UpOptions {
  hosts: number;
  pods: number;
  /** Underlay MTU (veths and the underlay bridge). */
  mtu: number;
  /** The weft-net plugin binary. */
  plugin: string;
  /** The weft binary that runs the routers. */
  weft: string;
  /** Extra arguments for every `weft router`. */
  routerArgs: string[];
  /** Deadline for the routers to answer and for the mesh to form. */
  deadlineMs: number;
  /** Run the ping matrix after set-up (the CLI prints it). */
  matrix: boolean;
  /** How hosts join: all through host 1 ('seed'), or each through the one before it ('chain'). */
  join: 'seed' | 'chain';
  /** How routers find their underlay: given `--advertise-addr` ('advertise'), or their own discovery ('discover'). */
  underlay: 'advertise' | 'discover';
  /** Hosts get a default route out of their underlay interface (as hosts with an uplink have). */
  defaultRoute: boolean;
  /** Kubernetes mode: the test API server, a Node per host, routers with --kubeconfig and no --peers (src/sandbox/kube.ts). */
  kube: boolean;
  /** Kubernetes mode: a file or directory of manifests to create (src/sandbox/kube-pods.ts). */
  manifests?: string;
}

/** Names must fit in interface-name-sized pieces and be safe in paths. */
const PREFIX_RE = /^[a-z][a-z0-9]{0,11}$/;

export function checkPrefix(prefix: string): string {
  if (!PREFIX_RE.test(prefix)) throw new ConfigError('--prefix', `"${prefix}" must be a lower-case letter then up to 11 lower-case letters or digits`);
  return prefix;
}

/** Where a sandbox with this prefix keeps its state file, router state, sockets and logs. */
export function sandboxDir(prefix: string): string {
  return join(SANDBOX_ROOT, prefix);
}

function intIn(flag: string, v: string | number | undefined, dflt: number, min: number, max: number): number {
  if (v === undefined) return dflt;
  const s = String(v);
  if (!/^\d+$/.test(s)) throw new ConfigError(flag, `"${s}" is not a whole number`);
  const n = Number(s);
  if (n < min || n > max) throw new ConfigError(flag, `must be ${min}..${max}, got ${n}`);
  return n;
}

function executable(flag: string, path: string, hint: string): string {
  if (!existsSync(path)) throw new ConfigError(flag, `${path} does not exist${hint}`);
  const st = statSync(path);
  if (!st.isFile()) throw new ConfigError(flag, `${path} is not a file`);
  try {
    // root passes access(X_OK) for any file, so look at the mode bits too
    accessSync(path, constants.X_OK);
    if ((st.mode & 0o111) === 0) throw new Error();
  } catch {
    throw new ConfigError(flag, `${path} is not executable`);
  }
  return path;
}

/**
 * Splits a command line the way a shell would for plain words: whitespace separates,
 * single and double quotes group, backslash escapes the next character (not inside single quotes).
 */
export function splitArgs(s: string, flag = '--router-args'): string[] {
  const out: string[] = [];
  let cur = '';
  let has = false;
  let quote: '"' | "'" | undefined;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (quote) {
      if (c === quote) quote = undefined;
      else if (c === '\\' && quote === '"' && i + 1 < s.length) cur += s[++i];
      else cur += c;
    } else if (c === '"' || c === "'") {
      quote = c;
      has = true;
    } else if (c === '\\' && i + 1 < s.length) {
      cur += s[++i];
      has = true;
    } else if (/\s/.test(c)) {
      if (has) out.push(cur);
      cur = '';
      has = false;
    } else {
      cur += c;
      has = true;
    }
  }
  if (quote) throw new ConfigError(flag, `unterminated ${quote} quote in "${s}"`);
  if (has) out.push(cur);
  return out;
}

/** Router flags the sandbox sets itself for every host; --router-args must not repeat them. */
const OWN_ROUTER_FLAGS = ['--state-dir', '--socket', '--advertise-addr', '--metrics-addr', '--nickname'];

export interface RawUpOptions {
  hosts?: string | number;
  pods?: string | number;
  mtu?: string | number;
  plugin?: string;
  weft?: string;
  routerArgs?: string | string[];
  deadlineMs?: number;
  matrix?: boolean;
  join?: string;
  underlay?: string;
  defaultRoute?: boolean;
  kube?: boolean;
  manifests?: string;
  /** `--password-file`: every router runs encrypted with it (read here first, so a bad file fails before anything is made). */
  passwordFile?: string;
  /** `--trusted-subnets`, with a password: comma-separated networks whose hosts skip data-path encryption. */
  trustedSubnets?: string;
}

/** Router flags for `--password-file` and `--trusted-subnets`, validated (errors name the sandbox's flag). */
function secretArgs(raw: RawUpOptions, routerArgs: readonly string[]): string[] {
  const out: string[] = [];
  for (const [flag, given] of [['--password-file', raw.passwordFile], ['--trusted-subnets', raw.trustedSubnets]] as const) {
    if (given !== undefined && routerArgs.some((a) => a.split('=')[0] === flag)) throw new ConfigError('--router-args', `${flag} is given as a sandbox option; leave it out of --router-args`);
  }
  if (raw.passwordFile !== undefined) {
    const file = resolve(raw.passwordFile);
    readPassword(file, '--password-file', {});
    out.push('--password-file', file);
  }
  if (raw.trustedSubnets !== undefined) {
    if (raw.passwordFile === undefined) throw new ConfigError('--trusted-subnets', 'needs --password-file (without a password nothing is encrypted)');
    const nets = raw.trustedSubnets.split(',').map((x) => x.trim());
    for (const n of nets) if (!parseCidr(n)) throw new ConfigError('--trusted-subnets', `"${n}" is not a network in CIDR notation (e.g. 172.30.0.0/24)`);
    out.push('--trusted-subnets', nets.join(','));
  }
  return out;
}

/** Validates `up` options; every error names the flag. */
export function upOptions(raw: RawUpOptions): UpOptions {
  const hosts = intIn('--hosts', raw.hosts, 2, 1, MAX_HOSTS);
  const pods = intIn('--pods', raw.pods, 2, 0, MAX_PODS);
  const mtu = intIn('--mtu', raw.mtu, 1500, MIN_UNDERLAY_MTU, MAX_UNDERLAY_MTU);
  const weft = executable('--weft', resolve(raw.weft ?? defaultWeftBinary()), ' (build it with ./build.sh)');
  const plugin = executable('--plugin', resolve(raw.plugin ?? defaultPlugin(weft)), raw.plugin ? '' : ' (build it with ./build.sh, or pass --plugin PATH)');
  const given = Array.isArray(raw.routerArgs) ? raw.routerArgs : splitArgs(raw.routerArgs ?? '');
  const routerArgs = [...given, ...secretArgs(raw, given)];
  for (const a of routerArgs) {
    const flag = a.split('=')[0]!;
    if (OWN_ROUTER_FLAGS.includes(flag)) throw new ConfigError('--router-args', `${flag} is set by the sandbox for each host; leave it out`);
  }
  const deadlineMs = raw.deadlineMs ?? DEFAULT_DEADLINE_MS;
  if (!(deadlineMs > 0)) throw new ConfigError('deadlineMs', 'must be positive');
  const join = raw.join ?? 'seed';
  if (join !== 'seed' && join !== 'chain') throw new ConfigError('--join', `"${join}" is not seed or chain`);
  const underlay = raw.underlay ?? 'advertise';
  if (underlay !== 'advertise' && underlay !== 'discover') throw new ConfigError('--underlay', `"${underlay}" is not advertise or discover`);
  const kube = !!raw.kube;
  if (raw.manifests !== undefined && !kube) throw new ConfigError('--manifests', 'needs --kube (the manifests go to the API server of Kubernetes mode)');
  if (kube) for (const a of routerArgs) if (['--kubeconfig', '--node-name', '--peers'].includes(a.split('=')[0]!)) throw new ConfigError('--router-args', `${a.split('=')[0]} is set by --kube for each host; leave it out`);
  return { hosts, pods, mtu, plugin, weft, routerArgs, deadlineMs, matrix: raw.matrix ?? true, join, underlay, defaultRoute: raw.defaultRoute ?? true, kube, manifests: raw.manifests };
}
