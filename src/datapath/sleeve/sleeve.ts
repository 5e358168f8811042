/**
 * The sleeve overlay: pod traffic between hosts through the routers, over a TCP stream per hop
 * (UDP while it is not up, or only UDP: stream.ts), sealed per hop
 * when a secret is set, relayed along the mesh's routes when two hosts cannot reach each other.
 *
 * Why it is this way (measured, see README "Benchmarks" and issue 8): Node pays per datagram,
 * so the kernel VXLAN keeps encapsulating and the router only moves its datagrams (kernel.ts);
 * with a large inner MTU (65000 by default) a TCP stream becomes few large datagrams, which
 * the underlay fragments and reassembles in the kernel. Relaying is per hop (relay.ts): each
 * router opens, then seals again with the next hop's keys.
 *
 * MTU: the sleeve carries any frame up to `innerMtu` on any path (IP fragments on the
 * underlay), so `podMtu` is `innerMtu` whatever the underlay; a pod behind a smaller pod MTU
 * (other overlays in use) is carried too. A pod therefore never sees a black hole as long as
 * the pod MTU is at most the minimum of `podMtu` over the overlays its host uses for any peer.
 * A path that drops IP fragments fails the probe (a full-size datagram), so it shows unhealthy
 * instead of silently losing large frames.
 *
 * Broadcast and ARP: the kernel replicates a flooded frame once per peer (one forwarding entry
 * each); every copy is addressed to one router and relayed only towards it, hop limit 16, and a
 * relay never sends a datagram back to the hop it came from, so nothing loops.
 */
import type { Overlay, OverlayPeer, OverlayPeerStatus, Underlay } from '../overlay';
import type { Logger } from '../../common/log';
import { contains, formatCidr, parseCidr, parseIPv4, type Cidr } from '../../common/ip';
import type { Iptables } from '../../sys/iptables';
import { ConfigError } from '../../common/errors';
import { SleeveKernel } from './kernel';
import { SleeveRelay, type SleeveCounters, type SleeveKeys, type SleeveRoutes } from './relay';
import { SlotTable } from './slots';
import { MAX_UDP_PAYLOAD, SEALED_OVERHEAD } from './wire';

/** UDP port routers exchange sleeve datagrams on (Weave's sleeve port). */
export const SLEEVE_PORT = 6783;
/** TCP port of the stream carrier (stream.ts) by default: the UDP port + 4. */
export const SLEEVE_STREAM_PORT = 6787;
/** How the sleeve's datagrams cross the underlay: a TCP stream per hop (UDP while it is not up), or UDP only. */
export type SleeveCarrier = 'tcp' | 'udp';
/** UDP port of the sleeve's own VXLAN device, reachable from loopback only. */
export const SLEEVE_VXLAN_PORT = 6786;
export const SLEEVE_VNI = 6784;
/** Default inner MTU: the largest frame a datagram carries (measured: see README). */
export const SLEEVE_INNER_MTU = 65000;
/** Ethernet header and VXLAN header: what the kernel adds to a frame in its datagram. */
const VXLAN_BYTES = 14 + 8;
/** The largest inner MTU a single UDP datagram can carry, sealed. */
export const MAX_INNER_MTU = MAX_UDP_PAYLOAD - SEALED_OVERHEAD - VXLAN_BYTES;
export const DEFAULT_BLOCK = '169.254.192.0/20';
export const DEFAULT_PORT_BASE = 61000;

/** What the sleeve uses of the rest of the router; the composition root passes them. */
export interface SleeveComponents {
  /** Next hops (the mesh's unicast routes) and peers' underlay addresses. */
  routes: SleeveRoutes;
  /** Data keys per directly connected peer, from the mesh connections' control sessions. */
  keys: SleeveKeys;
  /** iptables of this host's namespace (the router's `Iptables` instance). */
  iptables: Iptables;
  log: Logger;
}

export interface SleeveOptions {
  /** This router's peer name. */
  self: string;
  bridge: string;
  /** A secret is set: seal every hop outside `trustedSubnets`. */
  encrypted: boolean;
  /** `--trusted-subnets`: hops whose underlay address is inside are not sealed (when `localIp` is inside too). */
  trustedSubnets?: readonly string[];
  /**
   * This host's underlay address. Outside the trusted subnets, this host trusts no hop: the
   * peers of a link must agree on sealing it (each refuses plain datagrams from an untrusted
   * address), and its peers, seeing its address, seal towards it.
   */
  localIp?: string;
  /** UDP port between routers (default 6783). */
  port?: number;
  /** Address the UDP socket binds (default all). */
  bindAddress?: string;
  /** `tcp` (default): a stream per hop, UDP while it is not up; `udp`: datagrams only (see stream.ts). */
  carrier?: SleeveCarrier;
  /** TCP port of the stream carrier (default 6787). */
  streamPort?: number;
  /** Largest frame carried; the sleeve's pod MTU (default 65000). */
  innerMtu?: number;
  /** Host-local block for per-peer addresses (default 169.254.192.0/20). */
  block?: string;
  /** 127.0.0.1 ports of per-peer sockets start here (default 61000). */
  portBase?: number;
  /** UDP port of the sleeve's VXLAN device (default 6786). */
  vxlanPort?: number;
  /** How long a peer's previous data key is still accepted after it reconnected (default 5000 ms). */
  keyGraceMs?: number;
}

export class SleeveOverlay implements Overlay {
  readonly name = 'sleeve';
  /** Per datagram, before the underlay fragments it: IP, UDP, sleeve header and tag, VXLAN, Ethernet. */
  readonly overhead = 20 + 8 + SEALED_OVERHEAD + VXLAN_BYTES;
  readonly encrypted: boolean;
  readonly innerMtu: number;
  readonly carrier: SleeveCarrier;
  private readonly slots: SlotTable;
  private readonly kernel: SleeveKernel;
  private readonly relay: SleeveRelay;
  private peers = new Map<string, OverlayPeer>();
  private readonly health = new Map<string, boolean>();
  private queue: Promise<void> = Promise.resolve();
  /** Addresses whose owner changed since the kernel was last programmed. */
  private moved = new Set<string>();

  constructor(
    private readonly c: SleeveComponents,
    o: SleeveOptions,
  ) {
    this.encrypted = o.encrypted;
    this.innerMtu = o.innerMtu ?? SLEEVE_INNER_MTU;
    if (!Number.isInteger(this.innerMtu) || this.innerMtu < 576 || this.innerMtu > MAX_INNER_MTU) {
      throw new ConfigError('innerMtu', `${o.innerMtu} must be a whole number in 576..${MAX_INNER_MTU}`);
    }
    const trusted = (o.trustedSubnets ?? []).map((s): Cidr => {
      const c = parseCidr(s);
      if (!c) throw new ConfigError('trusted-subnets', `"${s}" is not a network in CIDR notation (e.g. 10.0.0.0/8)`);
      return c;
    });
    const local = o.localIp === undefined ? undefined : parseIPv4(o.localIp);
    if (o.localIp !== undefined && local === undefined) throw new ConfigError('localIp', `"${o.localIp}" is not an IPv4 address`);
    if (local !== undefined && !trusted.some((c) => contains(c, local))) trusted.length = 0;
    const block = parseCidr(o.block ?? DEFAULT_BLOCK);
    if (!block) throw new ConfigError('block', `"${o.block}" is not a network in CIDR notation`);
    this.slots = new SlotTable(block, o.portBase ?? DEFAULT_PORT_BASE);
    const vxlanPort = o.vxlanPort ?? SLEEVE_VXLAN_PORT;
    if (o.carrier !== undefined && o.carrier !== 'tcp' && o.carrier !== 'udp') throw new ConfigError('sleeve-carrier', `"${String(o.carrier)}" must be tcp or udp`);
    this.carrier = o.carrier ?? 'tcp';
    this.kernel = new SleeveKernel({ bridge: o.bridge, vni: SLEEVE_VNI, vxlanPort, mtu: this.innerMtu, slots: this.slots, iptables: c.iptables, log: c.log });
    this.relay = new SleeveRelay(
      { routes: c.routes, keys: c.keys, log: c.log },
      { self: o.self, port: o.port ?? SLEEVE_PORT, streamPort: this.carrier === 'tcp' ? (o.streamPort ?? SLEEVE_STREAM_PORT) : undefined, bindAddress: o.bindAddress, encrypted: o.encrypted, trusted, vxlanPort, probeBytes: this.innerMtu + VXLAN_BYTES, keyGraceMs: o.keyGraceMs },
    );
    c.log.debug({ block: formatCidr(block), trusted: trusted.map(formatCidr), innerMtu: this.innerMtu, encrypted: o.encrypted, carrier: this.carrier }, 'sleeve configured');
  }

  /** The sleeve carries frames up to its inner MTU on any underlay (the underlay fragments). */
  podMtu(_underlay: Underlay): number {
    return this.innerMtu;
  }

  async start(): Promise<void> {
    for (const { peer, index } of await this.kernel.previousSlots()) this.slots.adopt(peer, index);
    await this.kernel.setup();
    await this.relay.start();
  }

  /** Closes the sockets; the kernel state stays for the next start to adopt (`teardown` removes it). */
  async stop(): Promise<void> {
    await this.queue.catch(() => undefined);
    await this.relay.stop();
  }

  program(peers: readonly OverlayPeer[]): Promise<void> {
    const run = this.queue.then(() => this.apply(peers));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async apply(peers: readonly OverlayPeer[]): Promise<void> {
    const next = new Map(peers.map((p) => [p.name, p]));
    for (const s of this.slots.all()) {
      if (next.has(s.peer)) continue;
      this.slots.release(s.peer);
      this.moved.add(s.addr);
      this.health.delete(s.peer);
      await this.relay.detach(s.peer);
    }
    for (const p of peers) this.slots.assign(p.name);
    // rules first: a datagram sent from a peer's socket before its SNAT rule exists starts a
    // flow that keeps bypassing the rule (see kernel.ts)
    await this.kernel.program(this.slots.all(), [...this.moved]);
    this.moved.clear();
    for (const p of peers) await this.relay.attach(p.name, this.slots.get(p.name)!.port);
    this.peers = next;
  }

  async probe(peer: OverlayPeer): Promise<boolean> {
    const ok = await this.relay.probe(peer.name);
    if (this.peers.has(peer.name)) this.health.set(peer.name, ok);
    return ok;
  }

  /** Waits for programming under way: the rules it is changing would look wrong half-way. */
  async verify(): Promise<string | undefined> {
    await this.queue;
    const closed = this.relay.closed;
    if (closed) return closed;
    return this.kernel.verify();
  }

  async repair(): Promise<void> {
    await this.kernel.setup();
    await this.program([...this.peers.values()]);
  }

  /** The peer's line for `weft status connections`; undefined when the sleeve does not carry it. */
  status(peer: string): OverlayPeerStatus | undefined {
    const p = this.peers.get(peer);
    if (!p) return undefined;
    const hop = this.c.routes.nextHop(peer);
    const ep = hop ? this.c.routes.endpoint(hop) : undefined;
    return { overlay: this.name, healthy: this.health.get(peer), encrypted: ep ? this.relay.sealsTo(ep.ip) : this.encrypted, via: hop && hop !== peer ? hop : undefined };
  }

  /** Traffic and drop counters, for metrics. */
  get counters(): SleeveCounters {
    return this.relay.counters;
  }

  /** The address and local port that stand for a peer in this host's kernel (for diagnostics). */
  slotOf(peer: string): { addr: string; port: number } | undefined {
    const s = this.slots.get(peer);
    return s && { addr: s.addr, port: s.port };
  }

  /** Removes the sleeve's devices and rules from the host (after `stop`). */
  async teardown(): Promise<void> {
    await this.kernel.teardown();
  }
}
