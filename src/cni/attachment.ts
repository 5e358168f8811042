/** What ADD, DEL, CHECK and GC share: the attachment key, the router client, releasing. */
import { closeSync, fstatSync, openSync } from 'node:fs';
import { RouterClient } from '../common/client';
import { ConfigError, EnvError, RouterUnavailableError, UnsupportedFieldError } from '../common/errors';
import { isMac, parseAddrWithPrefix, parseCidr } from '../common/ip';
import { capability, DEFAULT_BRIDGE, DEFAULT_SOCKET, type NetConf } from '../common/netconf';
import { spoolDirFor, spoolRelease } from '../common/spool';
import type { AllocateRequest, AttachmentKey, ReleaseResponse } from '../common/api';
import type { Logger } from '../common/log';
import type { CniEnv } from './env';
import type { Trace } from './trace';

export interface Ctx {
  env: CniEnv;
  conf: NetConf;
  log: Logger;
  trace: Trace;
}

export function keyOf(ctx: Ctx): AttachmentKey {
  return { network: ctx.conf.name, containerId: ctx.env.containerId, ifname: ctx.env.ifname };
}

/**
 * ADD and CHECK work inside the container's network namespace: a path that is not there is the
 * runtime's mistake, reported as such before anything is allocated or created.
 *
 * The namespace is opened and the descriptor kept for the rest of the call: the router reaches
 * the namespace through `/proc/<this pid>/fd/<fd>`, which works even when the runtime's mount
 * of it is invisible to the router (containerd in a mount namespace of its own, a router in a
 * container). Returns that path.
 */
export function openNetns(env: CniEnv): string {
  let fd: number | undefined;
  try {
    fd = openSync(env.netns, 'r');
    if (fstatSync(fd).isFile()) return `/proc/${process.pid}/fd/${fd}`;
  } catch {
    /* reported below */
  }
  if (fd !== undefined) closeSync(fd);
  throw new EnvError('CNI_NETNS', `${env.netns} is not a network namespace (no such file; the container's namespace is gone or was never made)`);
}

export function bridgeOf(conf: NetConf): string {
  return conf.bridge ?? DEFAULT_BRIDGE;
}

export function clientOf(conf: NetConf, timeoutMs = 25_000): RouterClient {
  return new RouterClient({ socket: conf.socket ?? DEFAULT_SOCKET, timeoutMs });
}

/** The exact address asked for, from the three standard places (runtimeConfig, args, CNI_ARGS). */
function requestedAddress(ctx: Ctx): string | undefined {
  const sources: [string, unknown][] = [
    ['runtimeConfig.ips', capability(ctx.conf, 'ips')],
    ['args.cni.ips', ctx.conf.args?.cni?.ips],
    ['CNI_ARGS IP', ctx.env.args.ips.length ? ctx.env.args.ips : undefined],
  ];
  for (const [field, v] of sources) {
    if (v === undefined) continue;
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw new ConfigError(field, 'must be a list of addresses');
    if (v.length === 0) continue;
    if (v.length > 1) throw new UnsupportedFieldError(field, 'weft-net gives one IPv4 address per interface; got ' + v.length);
    const a = v[0] as string;
    if (!parseAddrWithPrefix(a, 32)) throw new ConfigError(field, `"${a}" is not an IPv4 address (A.B.C.D or A.B.C.D/P)`);
    return a;
  }
  return undefined;
}

function requestedMac(ctx: Ctx): string | undefined {
  const rc = capability(ctx.conf, 'mac');
  if (rc !== undefined) {
    if (typeof rc !== 'string' || !isMac(rc)) throw new ConfigError('runtimeConfig.mac', `"${String(rc)}" is not a MAC address`);
    return rc.toLowerCase();
  }
  const m = ctx.env.args.mac;
  if (m !== undefined) {
    if (!isMac(m)) throw new EnvError('CNI_ARGS', `MAC "${m}" is not a MAC address`);
    return m.toLowerCase();
  }
  return undefined;
}

/**
 * Builds the allocation request ADD sends; validates what the router cannot see (field names).
 * Without a MAC asked for, `mac` is absent and the router picks one.
 */
export function allocateRequest(ctx: Ctx): AllocateRequest {
  const ipamType = ctx.conf.ipam?.type;
  if (ipamType !== undefined && ipamType !== 'weft' && ipamType !== '') {
    throw new UnsupportedFieldError('ipam.type', `"${ipamType}": weft's router owns pod addresses; leave ipam.type out`);
  }
  const subnet = ctx.conf.ipam?.subnet;
  if (subnet !== undefined && !parseCidr(subnet)) {
    throw new ConfigError('ipam.subnet', `"${subnet}" is not a network in CIDR notation (e.g. 10.32.1.0/24)`);
  }
  const { podNamespace, podName } = ctx.env.args;
  return {
    ...keyOf(ctx),
    bridge: bridgeOf(ctx.conf),
    address: requestedAddress(ctx),
    subnet,
    mac: requestedMac(ctx),
    pod: podNamespace || podName ? { namespace: podNamespace, name: podName } : undefined,
  };
}

/**
 * Releases the attachment's address. When the router cannot be reached the release is
 * recorded durably for it to apply later, so DEL never blocks pod deletion and never leaks.
 */
export async function releaseAttachment(ctx: Ctx, key: AttachmentKey): Promise<void> {
  try {
    const r = await clientOf(ctx.conf, 10_000).post<ReleaseResponse>('/v1/ipam/release', key);
    ctx.log.debug({ ifname: key.ifname, released: r.released, address: r.address }, 'release');
  } catch (e) {
    if (!(e instanceof RouterUnavailableError)) throw e;
    const path = await spoolRelease(await spoolDirFor(ctx.conf.socket ?? DEFAULT_SOCKET), key);
    ctx.log.warn({ ifname: key.ifname, path, reason: e.message }, 'router unreachable; release recorded for later');
  }
}
