/**
 * Finding the underlay: the interface, address and MTU peers reach this host at.
 *
 * The options are flannel's and Calico's: `--advertise-addr IP`, `--iface NAME` (or a regular
 * expression over names), `--iface-can-reach IP`; otherwise the default route's interface;
 * otherwise, with no default route (on-premise, air-gapped), the interface of the route towards
 * the configured peers; otherwise the address a peer's connection reached this host at. An
 * explicit option that finds nothing is a configuration error; automatic discovery that finds
 * nothing leaves the router running without a data path, saying why in /readyz and status.
 */
import { lookup } from 'node:dns/promises';
import { ConfigError } from '../common/errors';
import { TypedEmitter } from '../common/events';
import type { Startable } from '../common/lifecycle';
import type { Logger } from '../common/log';
import { splitHostPort } from '../mesh/connection-maker';
import { listIpv4Interfaces, listRoutes, routeGet, type Ipv4Interface } from '../sys/link';
import type { Underlay } from './overlay';

export interface UnderlayOptions {
  advertiseAddr?: string;
  iface?: string;
  ifaceCanReach?: string;
  /** Peers as given (HOST or HOST:PORT). */
  peers: readonly string[];
  /** Interfaces weft itself makes (the bridge, VXLAN, pod veths): never an underlay. */
  ownDevices: (ifname: string) => boolean;
}

/** The system calls discovery makes; a fake stands in for them in unit tests. */
export interface UnderlaySys {
  interfaces(): Promise<Ipv4Interface[]>;
  defaultRouteDev(): Promise<string | undefined>;
  routeGet(ip: string): Promise<{ dev: string; src?: string } | undefined>;
  resolve(host: string): Promise<string | undefined>;
}

export const underlaySys: UnderlaySys = {
  interfaces: () => listIpv4Interfaces(),
  defaultRouteDev: async () => (await listRoutes()).find((r) => r.dst === 'default')?.dev,
  routeGet: (ip) => routeGet(ip),
  async resolve(host) {
    if (/^\d{1,3}(\.\d{1,3}){3}$/.test(host)) return host;
    try {
      return (await lookup(host, { family: 4 })).address;
    } catch {
      return undefined;
    }
  },
};

export type Discovery = { underlay: Underlay } | { reason: string };

const usable = (l: Ipv4Interface) => l.ifname !== 'lo' && l.addrs.length > 0;

function onIface(l: Ipv4Interface | undefined, how: string, ip?: string): Underlay | undefined {
  if (!l) return undefined;
  const addr = ip && l.addrs.includes(ip) ? ip : l.addrs[0];
  return addr ? { iface: l.ifname, ip: addr, mtu: l.mtu, how } : undefined;
}

/** One discovery pass, in the order of the options above (all but learning from a connection). */
export async function discoverUnderlay(o: UnderlayOptions, sys: UnderlaySys = underlaySys): Promise<Discovery> {
  const ifaces = (await sys.interfaces()).filter((l) => !o.ownDevices(l.ifname));
  const byName = (n: string | undefined) => ifaces.find((l) => l.ifname === n);
  if (o.advertiseAddr) {
    const l = ifaces.find((x) => x.addrs.includes(o.advertiseAddr!));
    if (!l) throw new ConfigError('--advertise-addr', `${o.advertiseAddr} is not an address of this host`);
    return { underlay: onIface(l, 'advertise-addr', o.advertiseAddr)! };
  }
  if (o.iface) {
    let re: RegExp | undefined;
    try {
      re = new RegExp(`^(?:${o.iface})$`);
    } catch {
      re = undefined;
    }
    const l = byName(o.iface) ?? ifaces.find((x) => usable(x) && re?.test(x.ifname));
    if (!l || !usable(l)) throw new ConfigError('--iface', `no interface with an IPv4 address matches "${o.iface}" (have: ${ifaces.filter(usable).map((x) => x.ifname).join(', ') || 'none'})`);
    return { underlay: onIface(l, 'iface')! };
  }
  if (o.ifaceCanReach) {
    const r = await sys.routeGet(o.ifaceCanReach);
    const u = r && onIface(byName(r.dev), 'iface-can-reach', r.src);
    if (!u) throw new ConfigError('--iface-can-reach', `this host has no route to ${o.ifaceCanReach}`);
    return { underlay: u };
  }
  const dflt = onIface(byName(await sys.defaultRouteDev()), 'default route');
  if (dflt) return { underlay: dflt };
  for (const p of o.peers) {
    const ip = await sys.resolve(splitHostPort(p, 0).host);
    const r = ip ? await sys.routeGet(ip) : undefined;
    const u = r && onIface(byName(r.dev), 'route to peers', r.src);
    if (u) return { underlay: u };
  }
  return {
    reason: o.peers.length
      ? `no default route and no route to the peers (${o.peers.join(', ')}); give --iface or --advertise-addr`
      : 'no default route and no peers to find a route to; give --iface or --advertise-addr, or connect a peer',
  };
}

export interface UnderlayEvents {
  found: [Underlay];
}

export interface UnderlayComponents {
  log: Logger;
  sys?: UnderlaySys;
  /** Peers to route towards, read at each attempt (flags and `weft connect` may add some). */
  peers: () => readonly string[];
}

/** The underlay part: discovers once at start, then keeps trying (and listens) until found. */
export class UnderlayFinder implements Startable {
  readonly events = new TypedEmitter<UnderlayEvents>();
  underlay: Underlay | undefined;
  /** Why there is no underlay yet. */
  reason = 'not looked for yet';
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly c: UnderlayComponents,
    private readonly o: Omit<UnderlayOptions, 'peers'> & { retryMs: number },
  ) {}

  async start(): Promise<void> {
    await this.attempt();
    if (this.underlay) return;
    this.c.log.error({ reason: this.reason }, 'no underlay: no data path to other hosts until one is found');
    this.timer = setInterval(() => void this.attempt().catch((e) => (this.reason = (e as Error).message)), this.o.retryMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
  }

  private async attempt(): Promise<void> {
    if (this.underlay) return;
    const d = await discoverUnderlay({ ...this.o, peers: this.c.peers() }, this.c.sys);
    if ('underlay' in d) this.found(d.underlay);
    else this.reason = d.reason;
  }

  /** A peer reached this host at `ip` (a connection's local address): the interface holding it is the underlay. */
  async learn(ip: string | undefined): Promise<void> {
    if (this.underlay || !ip) return;
    const l = (await (this.c.sys ?? underlaySys).interfaces()).find((x) => x.addrs.includes(ip.replace(/^::ffff:/, '')) && !this.o.ownDevices(x.ifname));
    const u = onIface(l, 'address a peer reached', ip.replace(/^::ffff:/, ''));
    if (u) this.found(u);
  }

  private found(u: Underlay): void {
    if (this.underlay) return;
    clearInterval(this.timer);
    this.underlay = u;
    this.c.log.info({ iface: u.iface, ip: u.ip, mtu: u.mtu, how: u.how }, 'underlay found');
    this.events.emit('found', u);
  }
}
