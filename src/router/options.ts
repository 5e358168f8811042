/**
 * `weft router`'s options, and every timing knob, parsed and validated in one place.
 *
 * Every flag also reads a `WEFT_*` variable (`--ipalloc-range` from `WEFT_IPALLOC_RANGE`), so a
 * DaemonSet's ConfigMap can set any of them; a flag given on the command line wins. The flag
 * names are part of the contract (DESIGN.md). Timing knobs are variables only (tests shorten
 * them); a bad value is an error naming the variable, never a silent default.
 */
import { readFileSync } from 'node:fs';
import * as z from 'zod/mini';
import { ConfigError } from '../common/errors';
import { containsCidr, isMac, parseCidr, type Cidr } from '../common/ip';
import { LEVELS, isLevel, type Level } from '../common/log';
import { DEFAULT_BRIDGE, DEFAULT_SOCKET, IFNAME_RE, zodToConfigError } from '../common/netconf';
import { DEFAULT_STATE_DIR } from '../common/spool';
import type { IpamInit } from '../ipam/service';

type Kind = 'string' | 'int' | 'bool' | 'list';

interface FlagSpec {
  kind: Kind;
  help: string;
  /** Shown in the help; the parsed default lives in ROUTER_DEFAULTS. */
  arg?: string;
}

/** The flags, in help order. The key is the flag without its dashes. */
export const FLAGS = {
  peers: { kind: 'list', arg: 'a,b', help: 'peers to connect to (same as PEER arguments)' },
  name: { kind: 'string', arg: 'MAC', help: 'peer name (default: chosen once, kept in the state dir)' },
  nickname: { kind: 'string', arg: 'NAME', help: 'nickname shown in status (default: host name)' },
  'state-dir': { kind: 'string', arg: 'DIR', help: `persistent state (default ${DEFAULT_STATE_DIR})` },
  socket: { kind: 'string', arg: 'PATH', help: `API socket, mode 0600 (default ${DEFAULT_SOCKET})` },
  'ipalloc-range': { kind: 'string', arg: 'CIDR', help: 'pod address range (default 10.32.0.0/12)' },
  'ipalloc-default-subnet': { kind: 'string', arg: 'CIDR', help: 'default subnet inside the range (default: the range)' },
  'ipalloc-init': { kind: 'string', arg: 'MODE', help: 'consensus=N | seed=A,B | observer (default consensus over the peers given + 1)' },
  port: { kind: 'int', arg: 'N', help: 'mesh TCP port (default 6783)' },
  bridge: { kind: 'string', arg: 'NAME', help: `bridge for the pods (default ${DEFAULT_BRIDGE})` },
  mtu: { kind: 'int', arg: 'N', help: 'pod MTU (default: underlay MTU less the encapsulation)' },
  'password-file': { kind: 'string', arg: 'F', help: 'encrypt peer traffic (or the password itself in WEFT_PASSWORD)' },
  'trusted-subnets': { kind: 'list', arg: 'CIDR,...', help: 'with a password: peers with an underlay address inside skip data-path encryption' },
  'sleeve-carrier': { kind: 'string', arg: 'tcp|udp', help: 'how the routers\' own data path crosses the underlay: tcp, a stream per peer on the mesh port + 4, UDP while it is down (default; fastest here); udp, datagrams only (better on lossy links)' },
  'metrics-addr': { kind: 'string', arg: 'HOST:PORT', help: 'metrics and health (default 127.0.0.1:6782)' },
  'advertise-addr': { kind: 'string', arg: 'IP', help: 'address peers reach this host at (its interface is the underlay)' },
  iface: { kind: 'string', arg: 'NAME|REGEX', help: 'underlay interface, by name or regular expression' },
  'iface-can-reach': { kind: 'string', arg: 'IP', help: 'underlay: the interface of the route to IP' },
  'conn-limit': { kind: 'int', arg: 'N', help: 'established mesh connections at most (default 200)' },
  kubeconfig: { kind: 'string', arg: 'FILE', help: 'Kubernetes mode from this kubeconfig (in a pod: the in-cluster configuration)' },
  'node-name': { kind: 'string', arg: 'NAME', help: 'this Node in Kubernetes mode (default NODE_NAME, else the host name)' },
  'service-cidr': { kind: 'list', arg: 'CIDR,...', help: 'Kubernetes Service ranges: NetworkPolicy checks pod egress to them after DNAT' },
  'no-masq': { kind: 'bool', help: 'do not masquerade pod egress' },
  'log-level': { kind: 'string', arg: 'LEVEL', help: 'trace|debug|info|warn|error (default info)' },
  'log-file': { kind: 'string', arg: 'F', help: 'log to a file instead of stderr' },
} as const satisfies Record<string, FlagSpec>;

export type FlagName = keyof typeof FLAGS;

/** `--ipalloc-range` -> `WEFT_IPALLOC_RANGE`. */
export const envName = (flag: string): string => `WEFT_${flag.replace(/-/g, '_').toUpperCase()}`;

/** Timing knobs: variable, default (ms). */
export const TIMINGS = {
  heartbeatMs: ['WEFT_HEARTBEAT_MS', 5000],
  refreshMs: ['WEFT_REFRESH_MS', 30_000],
  retryMinMs: ['WEFT_RETRY_MIN_MS', 1000],
  retryMaxMs: ['WEFT_RETRY_MAX_MS', 360_000],
  handshakeMs: ['WEFT_HANDSHAKE_MS', 5000],
  spaceTimeoutMs: ['WEFT_SPACE_TIMEOUT_MS', 10_000],
  programMs: ['WEFT_PROGRAM_MS', 5000],
  /** Longest gap between repair and reprogramming passes while the kernel reports no change. */
  idlePassMs: ['WEFT_IDLE_PASS_MS', 60_000],
  probeMs: ['WEFT_PROBE_MS', 10_000],
  peerGraceMs: ['WEFT_PEER_GRACE_MS', 60_000],
  spoolMs: ['WEFT_SPOOL_MS', 5000],
  underlayRetryMs: ['WEFT_UNDERLAY_RETRY_MS', 5000],
  orphanGraceMs: ['WEFT_ORPHAN_GRACE_MS', 10_000],
} as const;
export type Timings = { -readonly [K in keyof typeof TIMINGS]: number };

const optionsSchema = z.object({
  peers: z.array(z.string()),
  name: z.optional(z.string()),
  nickname: z.optional(z.string()),
  stateDir: z.string(),
  socket: z.string(),
  ipallocRange: z.string(),
  ipallocDefaultSubnet: z.optional(z.string()),
  ipallocInit: z.optional(z.string()),
  port: z.int().check(z.minimum(1), z.maximum(65535)),
  bridge: z.string().check(z.regex(IFNAME_RE, 'must be a valid interface name')),
  mtu: z.optional(z.int().check(z.minimum(576, 'must be at least 576'), z.maximum(65485, 'must be at most 65485'))),
  passwordFile: z.optional(z.string()),
  trustedSubnets: z.optional(z.array(z.string())),
  sleeveCarrier: z.enum(['tcp', 'udp']),
  metricsAddr: z.string().check(z.regex(/^.+:\d+$/, 'must be HOST:PORT')),
  advertiseAddr: z.optional(z.string().check(z.regex(/^\d{1,3}(\.\d{1,3}){3}$/, 'must be an IPv4 address'))),
  iface: z.optional(z.string()),
  ifaceCanReach: z.optional(z.string().check(z.regex(/^\d{1,3}(\.\d{1,3}){3}$/, 'must be an IPv4 address'))),
  connLimit: z.int().check(z.minimum(1), z.maximum(10_000)),
  kubeconfig: z.optional(z.string()),
  nodeName: z.optional(z.string().check(z.regex(/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/, 'must be a Kubernetes Node name'))),
  serviceCidr: z.optional(z.array(z.string())),
  masquerade: z.boolean(),
  logLevel: z.enum(LEVELS as unknown as [Level, ...Level[]]),
  logFile: z.optional(z.string()),
});

/** The options as given (validated). */
export type RouterOptions = z.infer<typeof optionsSchema>;

/** What the router is built from: the options, parsed further, and the timings. */
export interface RouterConfig extends RouterOptions {
  range: Cidr;
  defaultSubnet: Cidr;
  init: IpamInit;
  timings: Timings;
  /** The shared secret from --password-file or WEFT_PASSWORD; undefined runs unencrypted. */
  password?: string;
}

export const ROUTER_DEFAULTS = {
  stateDir: DEFAULT_STATE_DIR,
  socket: DEFAULT_SOCKET,
  ipallocRange: '10.32.0.0/12',
  port: 6783,
  bridge: DEFAULT_BRIDGE,
  sleeveCarrier: 'tcp' as 'tcp' | 'udp',
  metricsAddr: '127.0.0.1:6782',
  connLimit: 200,
  logLevel: 'info' as Level,
};

const camel = (flag: string) => flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

function cidrOption(field: string, v: string): Cidr {
  const c = parseCidr(v);
  if (!c) throw new ConfigError(field, `"${v}" is not a network in CIDR notation (e.g. 10.32.0.0/12)`);
  return c;
}

export function parseInit(v: string | undefined, peers: number): IpamInit {
  if (v === undefined) return { mode: 'consensus', size: peers + 1 };
  if (v === 'observer') return { mode: 'observer' };
  let m = /^consensus(?:=(\d+))?$/.exec(v);
  if (m) {
    const size = m[1] ? Number(m[1]) : peers + 1;
    if (size < 1) throw new ConfigError('--ipalloc-init', 'consensus=N needs N of at least 1');
    return { mode: 'consensus', size };
  }
  m = /^seed=(.+)$/.exec(v);
  if (m) {
    const names = m[1]!.split(',').map((s) => s.trim().toLowerCase());
    const bad = names.find((n) => !isMac(n));
    if (bad) throw new ConfigError('--ipalloc-init', `seed names are peer names like 42:8e:e8:c4:52:1b; "${bad}" is not`);
    return { mode: 'seed', names };
  }
  throw new ConfigError('--ipalloc-init', `"${v}" is not consensus=N, seed=NAME,... or observer`);
}

export function parseTimings(env: NodeJS.ProcessEnv): Timings {
  const out = {} as Timings;
  for (const [k, [name, dflt]] of Object.entries(TIMINGS) as [keyof Timings, readonly [string, number]][]) {
    const raw = env[name];
    if (raw === undefined || raw === '') {
      out[k] = dflt;
      continue;
    }
    if (!/^\d+$/.test(raw) || Number(raw) < 1) throw new ConfigError(name, `"${raw}" is not a positive whole number of milliseconds`);
    out[k] = Number(raw);
  }
  return out;
}

/**
 * Builds the configuration from flag values (as node:util parseArgs gives them), positional
 * peers and the environment. Throws ConfigError naming the flag (or variable) at fault.
 */
export function routerConfig(values: Record<string, unknown>, positionals: readonly string[], env: NodeJS.ProcessEnv): RouterConfig {
  const raw: Record<string, unknown> = {};
  for (const [flag, spec] of Object.entries(FLAGS) as [FlagName, FlagSpec][]) {
    const given = values[flag];
    const fromEnv = env[envName(flag)];
    const where = given !== undefined ? `--${flag}` : envName(flag);
    let v: unknown;
    if (given !== undefined) v = given;
    else if (fromEnv !== undefined && fromEnv !== '') v = fromEnv;
    if (v === undefined) continue;
    if (spec.kind === 'int') {
      if (!/^\d+$/.test(String(v))) throw new ConfigError(where, `"${String(v)}" is not a whole number`);
      v = Number(v);
    } else if (spec.kind === 'bool' && typeof v === 'string') {
      if (!/^(1|true|yes|0|false|no)$/i.test(v)) throw new ConfigError(where, `"${v}" is not true or false`);
      v = /^(1|true|yes)$/i.test(v);
    } else if (spec.kind === 'list') {
      v = String(v).split(/[\s,]+/).filter(Boolean);
    }
    raw[camel(flag)] = v;
  }
  const level = (raw.logLevel as string | undefined) ?? ROUTER_DEFAULTS.logLevel;
  if (!isLevel(level)) throw new ConfigError('--log-level', `"${level}" is not one of trace, debug, info, warn, error, fatal, silent`);
  const r = optionsSchema.safeParse({
    ...ROUTER_DEFAULTS,
    ...raw,
    peers: [...positionals, ...((raw.peers as string[] | undefined) ?? [])],
    masquerade: !(raw.noMasq ?? false),
    noMasq: undefined,
    logLevel: level,
  });
  if (!r.success) {
    const e = zodToConfigError(r.error);
    const field = e.field.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
    throw new ConfigError(field in FLAGS ? `--${field}` : field, e.message.slice(e.field.length + 2));
  }
  const o = r.data;
  const range = cidrOption('--ipalloc-range', o.ipallocRange);
  const defaultSubnet = o.ipallocDefaultSubnet ? cidrOption('--ipalloc-default-subnet', o.ipallocDefaultSubnet) : range;
  if (!containsCidr(range, defaultSubnet)) throw new ConfigError('--ipalloc-default-subnet', `must lie inside --ipalloc-range ${o.ipallocRange}`);
  if (o.sleeveCarrier === 'tcp' && o.port > 65531) throw new ConfigError('--port', `${o.port}: with --sleeve-carrier tcp the stream uses the port + 4, so at most 65531`);
  for (const c of o.serviceCidr ?? []) cidrOption(values['service-cidr'] !== undefined ? '--service-cidr' : envName('service-cidr'), c);
  for (const c of o.trustedSubnets ?? []) cidrOption(values['trusted-subnets'] !== undefined ? '--trusted-subnets' : envName('trusted-subnets'), c);
  const password = readPassword(o.passwordFile, values['password-file'] !== undefined ? '--password-file' : envName('password-file'), env);
  return { ...o, range, defaultSubnet, init: parseInit(o.ipallocInit, o.peers.length), timings: parseTimings(env), password };
}

/**
 * The shared secret: the file's content without its trailing newline, else WEFT_PASSWORD
 * itself. An unreadable or empty file is an error naming the flag (never a silent plain run).
 */
export function readPassword(file: string | undefined, field: string, env: NodeJS.ProcessEnv): string | undefined {
  if (file === undefined) return env.WEFT_PASSWORD ? env.WEFT_PASSWORD : undefined;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(field, `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const pw = text.replace(/\r?\n$/, '');
  if (pw === '') throw new ConfigError(field, `${file} is empty: it must hold the password`);
  return pw;
}

/** The help of `weft router`, generated from the table. */
export function routerHelp(): string {
  const lines = Object.entries(FLAGS).map(([flag, s]) => {
    const left = `  --${flag}${'arg' in s ? ` ${s.arg}` : ''}`;
    return `${left.padEnd(30)} ${s.help}`;
  });
  return `Usage: weft router [PEER...] [options]

Runs the router of this host: the mesh with its peers, IPAM for the pods, the bridge, the data
path to other hosts, forwarding and masquerade rules, and the API on a unix socket for the
weft-net plugin and the weft CLI.

Options (each also read from WEFT_<NAME>, e.g. --ipalloc-range from WEFT_IPALLOC_RANGE):
${lines.join('\n')}

Examples:
  weft router
  weft router 192.168.1.10 --ipalloc-range 10.32.0.0/12
  weft router --state-dir /tmp/w1 --socket /tmp/w1/weft.sock --bridge weave
`;
}
