/**
 * The fast data path, "fastdp": a kernel VXLAN device on UDP 6784, a port of the bridge, with
 * one forwarding entry per peer for flooding (head-end replication) and one per peer bridge MAC.
 *
 * Why it is this way: the kernel encapsulates and forwards, so a router restart drops no
 * established traffic: the device and its entries outlive the router, and a starting router
 * only adds what is missing (the grace rules are in fdb.ts). Remote pod MACs are learnt by the
 * device itself from incoming traffic (learning is on).
 *
 * With a secret and trusted subnets, kernel VXLAN carries only trusted peers, and its port then
 * accepts only them: a filter chain on INPUT (`WEFT-VXLAN-IN`) returns datagrams to UDP 6784
 * from the trusted subnets and drops the rest, so nobody outside can inject plain frames onto
 * the bridge. It stays while the router is down (as the device does); a router started
 * without trusted subnets removes it.
 */
import type { Logger } from '../common/log';
import { vxlanSys, type VxlanSys } from '../sys/vxlan';
import { fdbSettle } from '../sys/fdb';
import type { ChainSpec, Iptables } from '../sys/iptables';
import { fdbGraceRunning, newFdbMemory, planFdb, type FdbMemory } from './fdb';
import type { Overlay, OverlayPeer, Underlay } from './overlay';

export const VXLAN_PORT = 6784;
export const VXLAN_VNI = 6784;
export const VXLAN_DEV = 'vxlan-6784';
/** VXLAN over IPv4: outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8. */
export const VXLAN_OVERHEAD = 50;
/** The filter chain that limits UDP 6784 to the trusted subnets (see the file comment). */
export const VXLAN_FILTER_CHAIN = 'WEFT-VXLAN-IN';

/** Destinations another overlay may put in the same table (link-local next hops of the routers' own path). */
const isLinkLocal = (ip: string) => ip.startsWith('169.254.');

export interface FastDpComponents {
  bridge: string;
  underlay: Underlay;
  /** The pod MTU the device is set to. */
  podMtu: () => number;
  /**
   * Probes a peer's bridge address with datagrams of the pod MTU: with a VXLAN datagram built
   * by the router (`probeVxlan`, see probe.ts), or, without it, through the forwarding table
   * (`probe`).
   */
  prober: {
    probe(peerBridgeIp: string, mtu: number): Promise<boolean>;
    probeVxlan?(peer: OverlayPeer, vni: number, port: number, mtu: number): Promise<boolean>;
  };
  log: Logger;
  sys?: VxlanSys;
  /** This host's iptables: the UDP 6784 filter of `acceptFrom` is made (or a stale one removed) with it. */
  iptables?: Pick<Iptables, 'apply' | 'missingJumps' | 'rules' | 'remove'>;
}

export interface FastDpInit {
  /** How long entries of an unreachable or unaccounted-for peer are kept (default 60 s). */
  graceMs: number;
  /** Networks (canonical CIDR) UDP 6784 accepts datagrams from; undefined accepts all (no filter). Needs `iptables`. */
  acceptFrom?: readonly string[];
}

export class FastDp implements Overlay {
  readonly name = 'fastdp';
  readonly overhead = VXLAN_OVERHEAD;
  readonly encrypted = false;
  private readonly sys: VxlanSys;
  private mem: FdbMemory | undefined;

  constructor(
    private readonly c: FastDpComponents,
    private readonly o: FastDpInit,
  ) {
    this.sys = c.sys ?? vxlanSys;
  }

  podMtu(u: Underlay): number {
    return u.mtu - this.overhead;
  }

  async start(): Promise<void> {
    await this.repair();
  }

  async stop(): Promise<void> {
    // the device and its entries stay: pods keep talking across hosts while the router is down
  }

  /** Creates or adopts the VXLAN device and puts it on the bridge. */
  async repair(): Promise<void> {
    const u = this.c.underlay;
    const link = await this.sys.getLink(VXLAN_DEV);
    const info = link?.linkinfo as { info_kind?: string; info_data?: { id?: number; port?: number; local?: string } } | undefined;
    const fits = info?.info_kind === 'vxlan' && info.info_data?.id === VXLAN_VNI && info.info_data?.port === VXLAN_PORT && info.info_data?.local === u.ip;
    if (link && !fits) {
      this.c.log.warn({ dev: VXLAN_DEV }, 'VXLAN device has other settings; recreating it');
      await this.sys.remove(VXLAN_DEV);
    }
    if (!link || !fits) {
      await this.sys.create({ name: VXLAN_DEV, vni: VXLAN_VNI, port: VXLAN_PORT, local: u.ip, dev: u.iface });
      this.c.log.info({ dev: VXLAN_DEV, local: u.ip, underlay: u.iface }, 'VXLAN device created');
    }
    await this.sys.attach(VXLAN_DEV, this.c.podMtu(), this.c.bridge);
    const ipt = this.c.iptables;
    if (ipt && this.o.acceptFrom) await ipt.apply([this.filter()]);
    else if (ipt) await ipt.remove([this.filter()]);
  }

  /** The chain limiting UDP 6784 to `acceptFrom`. */
  private filter(): ChainSpec {
    const dport = `-p udp -m udp --dport ${VXLAN_PORT}`;
    const rules = (this.o.acceptFrom ?? []).map((c) => `${c.endsWith('/0') ? '' : `-s ${c} `}${dport} -j RETURN`);
    return { table: 'filter', chain: VXLAN_FILTER_CHAIN, from: 'INPUT', rules: [...rules, `${dport} -j DROP`] };
  }

  async verify(): Promise<string | undefined> {
    const l = await this.sys.getLink(VXLAN_DEV);
    if (!l) return `VXLAN device ${VXLAN_DEV} is missing`;
    if (!l.flags.includes('UP')) return `VXLAN device ${VXLAN_DEV} is down`;
    if (l.master !== this.c.bridge) return `VXLAN device ${VXLAN_DEV} is not on bridge ${this.c.bridge}`;
    const ipt = this.c.iptables;
    if (ipt && this.o.acceptFrom) {
      const f = this.filter();
      if ((await ipt.missingJumps([f])).length) return `UDP ${VXLAN_PORT} filter chain ${VXLAN_FILTER_CHAIN} is not hooked into INPUT`;
      const have = (await ipt.rules('filter', f.chain)).map((l) => l.slice(`-A ${f.chain} `.length).trim());
      if (have.join('\n') !== f.rules.join('\n')) return `UDP ${VXLAN_PORT} filter chain ${VXLAN_FILTER_CHAIN} does not hold the trusted subnets' rules`;
    }
    return undefined;
  }

  /** True when it changed entries, or an unreachable peer's grace is running (its entries fall due for removal with time). */
  async program(peers: readonly OverlayPeer[]): Promise<boolean> {
    const now = Date.now();
    this.mem ??= newFdbMemory(now);
    const have = await this.sys.listFdb(VXLAN_DEV);
    const plan = planFdb(VXLAN_DEV, have, peers, this.mem, now, this.o.graceMs, (dst) => !isLinkLocal(dst));
    await fdbSettle(plan.lines, (l) => this.sys.applyFdb(l));
    if (plan.lines.length) this.c.log.debug({ added: plan.added, removed: plan.removed }, 'VXLAN forwarding entries programmed');
    return plan.lines.length > 0 || fdbGraceRunning(this.mem, now, this.o.graceMs);
  }

  /**
   * Always the router-built VXLAN datagram when there is one, even while this overlay carries
   * the peer: a probe through the forwarding table leaves by whichever bridge port the peer's
   * MAC was learnt on, which after a move from the sleeve is the sleeve's device, so it passed
   * with UDP 6784 blocked and the peer flapped between the two paths every probe (TCP stalled).
   */
  async probe(peer: OverlayPeer): Promise<boolean> {
    if (!peer.gateway) return false;
    if (!this.c.prober.probeVxlan || !peer.bridgeMac) return this.c.prober.probe(peer.gateway, this.c.podMtu());
    return this.c.prober.probeVxlan(peer, VXLAN_VNI, VXLAN_PORT, this.c.podMtu());
  }
}
