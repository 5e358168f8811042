/**
 * The pieces every multi-host set-up on one machine is made of, shared by `weft sandbox` and
 * the test helpers (test/helpers/netns.ts), so there is one copy: an underlay namespace with a
 * bridge, host namespaces on it (a veth each, with its address, MTU and optionally a default
 * route), and a router's argument list and detached start.
 *
 * Why it is this way: the set-up is described as `ip -batch` lines per namespace (pure
 * functions), and `makeUnderlay` runs them asynchronously for the sandbox; the test helpers
 * keep their synchronous API by running the very same lines through their own synchronous
 * runner. The veth pairs are born inside the namespaces (the underlay end in the underlay
 * namespace, the host end moved straight into its host namespace), so nothing ever appears in
 * the machine's own namespace, not even for a moment.
 */
import { promises as fs } from 'node:fs';
import { ipBatch, run } from '../sys/exec';
import { spawnDetached } from '../sys/process';
import { mapPool } from './pool';
import { netnsPath } from './types';
import { isoTime } from '../common/time';

/** The shared segment: a bridge in a namespace of its own. */
export interface UnderlaySpec {
  /** Namespace name (it must not exist yet). */
  netns: string;
  bridge: string;
  /** MTU of the bridge and of every veth on it (default: the kernel's, 1500). */
  mtu?: number;
}

/** One host on the underlay. */
export interface LabHostSpec {
  /** Namespace name (it must not exist yet). */
  netns: string;
  /** The veth end on the bridge, inside the underlay namespace. */
  underlayVeth: string;
  /** The veth end inside the host namespace, e.g. eth0. */
  ifname: string;
  /** Its address with prefix length, e.g. 172.30.0.11/24. */
  cidr: string;
  /** A default route out of `ifname`, as a host with an uplink has (nothing leaves the namespaces). */
  defaultRoute?: boolean;
}

const mtuOf = (mtu: number | undefined) => (mtu ? ` mtu ${mtu}` : '');

/** `ip -batch` lines for the underlay namespace itself: loopback and the bridge. */
export function underlayLines(u: UnderlaySpec): string[] {
  return ['link set lo up', `link add ${u.bridge}${mtuOf(u.mtu)} type bridge`, `link set ${u.bridge} up`];
}

/** `ip -batch` lines, run in the underlay namespace, that make the hosts' veths and plug them into the bridge. */
export function attachLines(u: UnderlaySpec, hosts: readonly LabHostSpec[]): string[] {
  return hosts.flatMap((h) => [
    `link add ${h.underlayVeth}${mtuOf(u.mtu)} type veth peer name ${h.ifname}${mtuOf(u.mtu)} netns ${h.netns}`,
    `link set ${h.underlayVeth} master ${u.bridge}`,
    `link set ${h.underlayVeth} up`,
  ]);
}

/** `ip -batch` lines for a host namespace once its veth is in it. */
export function hostLines(h: LabHostSpec): string[] {
  return [
    'link set lo up',
    `addr add ${h.cidr} dev ${h.ifname}`,
    `link set ${h.ifname} up`,
    ...(h.defaultRoute ? [`route add default dev ${h.ifname}`] : []),
  ];
}

/** Makes the host namespaces (none may exist yet) and plugs them into the underlay's bridge. */
export async function plugHosts(u: UnderlaySpec, hosts: readonly LabHostSpec[]): Promise<void> {
  await mapPool(hosts, 8, (h) => run('ip', ['netns', 'add', h.netns]));
  await ipBatch(attachLines(u, hosts), { netns: netnsPath(u.netns) });
  await mapPool(hosts, 8, (h) => ipBatch(hostLines(h), { netns: netnsPath(h.netns) }));
}

/** Makes the underlay namespace and bridge and the host namespaces on it (none of them may exist yet). */
export async function makeUnderlay(u: UnderlaySpec, hosts: readonly LabHostSpec[]): Promise<void> {
  await run('ip', ['netns', 'add', u.netns]);
  await ipBatch(underlayLines(u), { netns: netnsPath(u.netns) });
  await plugHosts(u, hosts);
}

/** What a `weft router` is started with; the flags a set-up gives each router itself. */
export interface RouterSpec {
  stateDir: string;
  socket: string;
  advertiseAddr?: string;
  metricsAddr?: string;
  nickname?: string;
  /** Peers to join through (--peers, comma-separated). */
  peers?: readonly string[];
  /** Anything else, appended as given. */
  extra?: readonly string[];
}

/** The `weft router ...` argument list for a spec. */
export function routerArgv(s: RouterSpec): string[] {
  const opt = (flag: string, v: string | undefined) => (v ? [flag, v] : []);
  return [
    'router',
    '--state-dir', s.stateDir,
    '--socket', s.socket,
    ...opt('--advertise-addr', s.advertiseAddr),
    ...opt('--metrics-addr', s.metricsAddr),
    ...opt('--nickname', s.nickname),
    ...opt('--peers', s.peers?.length ? s.peers.join(',') : undefined),
    ...(s.extra ?? []),
  ];
}

/**
 * Starts `weft` with `argv` inside the namespace at `netnsPath`, detached (own session, output
 * appended to `logFile` after a line naming the command), and returns its pid.
 */
export async function spawnRouter(weft: string, argv: readonly string[], o: { netnsPath: string; logFile: string; env?: Record<string, string> }): Promise<number> {
  await fs.appendFile(o.logFile, `--- ${isoTime()} ${weft} ${argv.join(' ')}\n`, { mode: 0o600 });
  return spawnDetached(weft, argv, { netns: o.netnsPath, logFile: o.logFile, env: o.env });
}
