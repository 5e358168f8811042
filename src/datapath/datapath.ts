/**
 * The data path between hosts: which overlay carries each peer, programming them from the
 * topology, probing, and the pod MTU.
 *
 * Why it is this way: programming is level-triggered (the whole wanted state on every change
 * and on a timer, debounced, never overlapping), so a missed event or a restart heals on the
 * next round. The pod MTU has one owner, here: the smallest an overlay in use carries, unless
 * the operator set it. Until an underlay is known there is no data path, and `verify` says so.
 *
 * Which overlay carries a peer (`choose`), when the sleeve is there: with a secret, the sleeve,
 * except for peers whose underlay address is in the trusted subnets when this host's is too;
 * without one (and for trusted peers), kernel VXLAN unless its probe failed two rounds in a row
 * (then the sleeve, which the mesh routes
 * through other routers when there is no direct connection). The mesh's view alone never moves
 * a peer off kernel VXLAN: while a router restarts, its peers see it gone or reached through
 * others for a moment, and kernel VXLAN, which needs no router, keeps carrying its pods. Kernel
 * VXLAN's probe goes on while the sleeve carries a peer (probe.ts builds the datagram itself),
 * so a peer returns to it when the path works again. A peer is programmed on one overlay only:
 * on two, broadcast would be delivered twice.
 */
import { TypedEmitter } from '../common/events';
import { Timers, type Startable } from '../common/lifecycle';
import type { Logger } from '../common/log';
import { Pacer } from '../common/pacer';
import { contains, parseIPv4, type Cidr } from '../common/ip';
import type { PeerView } from '../mesh/topology';
import type { Overlay, OverlayPeer, OverlayPeerStatus, Underlay } from './overlay';

/** Probe rounds (each of two tries) that must fail in a row before a path counts as broken. */
export const FAILED_ROUNDS = 2;

/** Before the underlay is known: Ethernet's 1500 less VXLAN. */
const PROVISIONAL_MTU = 1450;

export interface DataPathComponents {
  self: string;
  /** The peers as the mesh knows them, and the next hop towards each. */
  mesh: { peers(): PeerView[]; nextHop(peer: string): string | undefined };
  /** Builds the overlays once the underlay is known (kernel VXLAN first). */
  overlays: (u: Underlay) => Overlay[];
  /** The kernel reports changes (src/sys/monitor.ts): the periodic programming may slow down while nothing changes. */
  watching?: () => boolean;
  log: Logger;
}

export interface DataPathInit {
  /** Operator's pod MTU (--mtu), overriding the overlays'. */
  mtu?: number;
  programMs: number;
  /** Longest gap between periodic programming passes while nothing changes (default `programMs`: no slowing down). */
  idleMs?: number;
  probeMs: number;
  /** A secret is set: the sleeve carries every peer outside `trusted`. */
  encrypted?: boolean;
  /** `--trusted-subnets`: peers with an underlay address inside may use kernel VXLAN. */
  trusted?: readonly Cidr[];
}

export interface DataPathEvents {
  /** The pod MTU changed (the underlay was found). */
  mtu: [number];
}

export class DataPath implements Startable {
  readonly events = new TypedEmitter<DataPathEvents>();
  private overlays: Overlay[] = [];
  private underlay: Underlay | undefined;
  private readonly status = new Map<string, OverlayPeerStatus>();
  private readonly health = new Map<string, boolean>();
  /** Failed probe rounds in a row, per overlay and peer. */
  private readonly fails = new Map<string, number>();
  private programming: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private readonly timers = new Timers();
  private mtu: number;
  /** The last programming round changed something or has timed work pending. */
  private busy = false;
  private readonly pacer: Pacer;

  constructor(
    private readonly c: DataPathComponents,
    private readonly o: DataPathInit,
  ) {
    this.mtu = o.mtu ?? PROVISIONAL_MTU;
    this.pacer = new Pacer(
      async () => {
        this.schedule();
        await this.programming;
        return this.busy || !this.c.watching?.();
      },
      { busyMs: o.programMs, idleMs: o.idleMs ?? o.programMs },
    );
  }

  /** The MTU pods get. */
  get podMtu(): number {
    return this.mtu;
  }

  get ready(): boolean {
    return this.underlay !== undefined;
  }

  async start(): Promise<void> {
    await this.pacer.start();
    this.timers.every(this.o.probeMs, () => void this.probeAll());
  }

  /** Something changed in the kernel: the periodic programming comes back to `programMs`. */
  poke(): void {
    this.pacer.poke();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.pacer.stop();
    this.timers.clear();
    await this.programming;
    for (const ov of this.overlays) await ov.stop();
  }

  /** The underlay is known: build and start the overlays, set the pod MTU, program. */
  async useUnderlay(u: Underlay): Promise<void> {
    if (this.underlay) return;
    this.underlay = u;
    const overlays = this.c.overlays(u);
    const mtu = this.o.mtu ?? Math.min(...overlays.map((ov) => ov.podMtu(u)));
    if (mtu !== this.mtu) {
      this.mtu = mtu;
      this.events.emit('mtu', mtu);
    }
    for (const ov of overlays) await ov.start();
    this.overlays = overlays;
    this.schedule();
  }

  /** What is wrong with the data path; empty when nothing. */
  async verify(): Promise<string[]> {
    if (!this.underlay) return ['no data path to other hosts: no underlay found'];
    const out: string[] = [];
    for (const ov of this.overlays) {
      const w = await ov.verify();
      if (w) out.push(w);
    }
    return out;
  }

  /** Puts back what `verify` found missing. */
  async repair(): Promise<void> {
    for (const ov of this.overlays) if (await ov.verify()) await ov.repair();
    this.schedule();
  }

  /** How a peer is carried, for status. */
  peerStatus(peer: string): OverlayPeerStatus | undefined {
    const st = this.status.get(peer);
    if (!st) return undefined;
    const own = this.overlay(st.overlay)?.status?.(peer);
    return own ? { ...st, encrypted: own.encrypted, via: own.via ?? st.via, healthy: this.health.get(`${st.overlay}/${peer}`) } : st;
  }

  /** Reprograms soon (debounced; a call while programming runs one more round after it). */
  schedule(): void {
    if (this.stopped || this.overlays.length === 0) return;
    if (this.programming) {
      this.again = true;
      return;
    }
    this.programming = (async () => {
      this.busy = false;
      do {
        this.again = false;
        try {
          if (await this.program()) this.busy = true;
        } catch (e) {
          this.busy = true;
          this.c.log.error({ err: (e as Error).message }, 'programming the data path failed');
        }
      } while (this.again && !this.stopped);
      this.programming = undefined;
    })();
  }

  private peers(): OverlayPeer[] {
    const out: OverlayPeer[] = [];
    for (const p of this.c.mesh.peers()) {
      if (p.name === this.c.self || !p.meta.underlay) continue;
      const hop = this.c.mesh.nextHop(p.name);
      out.push({ name: p.name, nickname: p.nickname, ip: p.meta.underlay, bridgeMac: p.meta.bridgeMac, gateway: p.meta.gateway, reachable: p.reachable, via: hop && hop !== p.name ? hop : undefined });
    }
    return out;
  }

  private overlay(name: string): Overlay | undefined {
    return this.overlays.find((ov) => ov.name === name);
  }

  /**
   * Kernel VXLAN may carry this peer (see the file comment): no secret, or both ends' underlay
   * addresses trusted. Both, so the two routers of a link decide alike (with the same
   * `--trusted-subnets`): a host outside the trusted subnets seals everything it sends, and
   * its peers, seeing its address, do the same towards it.
   */
  private fastdpAllowed(p: OverlayPeer): boolean {
    if (!this.o.encrypted) return true;
    const inside = (a: string | undefined) => {
      const ip = a === undefined ? undefined : parseIPv4(a);
      return ip !== undefined && (this.o.trusted ?? []).some((c) => contains(c, ip));
    };
    return inside(p.ip) && inside(this.underlay?.ip);
  }

  /** The overlay that carries a peer (see the file comment). */
  private choose(p: OverlayPeer): Overlay {
    const fast = this.overlay('fastdp');
    const sleeve = this.overlay('sleeve');
    if (!sleeve) return this.overlays.find((ov) => this.health.get(`${ov.name}/${p.name}`) !== false) ?? this.overlays[0]!;
    if (!fast || !this.fastdpAllowed(p) || this.health.get(`fastdp/${p.name}`) === false) return sleeve;
    return fast;
  }

  /** Resolves true when an overlay changed something or has timed work pending. */
  private async program(): Promise<boolean> {
    const byOverlay = new Map<Overlay, OverlayPeer[]>(this.overlays.map((ov) => [ov, []]));
    const peers = this.peers();
    for (const p of peers) {
      const ov = this.choose(p);
      byOverlay.get(ov)!.push(p);
      this.status.set(p.name, { overlay: ov.name, encrypted: ov.encrypted, via: p.via, healthy: this.health.get(`${ov.name}/${p.name}`) });
      this.c.log.debug({ peer: p.name, overlay: ov.name, via: p.via }, 'peer data path');
    }
    for (const name of [...this.status.keys()]) if (!peers.some((p) => p.name === name)) this.status.delete(name);
    let busy = false;
    for (const [ov, ps] of byOverlay) if ((await ov.program(ps)) === true) busy = true;
    return busy;
  }

  private async probeAll(): Promise<void> {
    if (this.overlays.length === 0) return;
    const all = this.peers();
    const carried = all.filter((p) => p.reachable && p.gateway);
    let changed = false;
    // a peer whose router is unreachable answers no probe (and the sleeve could not carry it
    // either): what was learnt of its paths is forgotten, so kernel VXLAN, which needs no
    // router, keeps carrying it, and it is judged afresh once its router is back
    for (const p of all) {
      if (p.reachable) continue;
      for (const ov of this.overlays) {
        const key = `${ov.name}/${p.name}`;
        if (this.health.delete(key)) changed = true;
        this.fails.delete(key);
      }
    }
    const check = async (ov: Overlay, p: OverlayPeer) => {
      const ok = await ov.probe(p);
      const key = `${ov.name}/${p.name}`;
      const fails = ok ? 0 : (this.fails.get(key) ?? 0) + 1;
      this.fails.set(key, fails);
      // one lost round (a loaded host, a router restarting) moves nothing
      const healthy = ok ? true : fails >= FAILED_ROUNDS ? false : this.health.get(key);
      if (healthy === undefined) return;
      if (this.health.get(key) !== healthy) {
        this.c.log.info({ peer: p.name, nickname: p.nickname, overlay: ov.name, ok: healthy }, 'data path to peer');
        changed = true;
      }
      this.health.set(key, healthy);
    };
    const fast = this.overlay('fastdp');
    await Promise.all(
      carried.map(async (p) => {
        // kernel VXLAN is probed while another overlay carries the peer too, so the peer can return to it
        if (fast && this.overlay('sleeve') && this.fastdpAllowed(p)) await check(fast, p);
        const ov = this.choose(p);
        if (ov !== fast || !this.overlay('sleeve')) await check(ov, p);
      }),
    );
    if (changed) this.schedule();
  }
}
