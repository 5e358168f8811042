/**
 * The data path between hosts: which overlay carries each peer, programming them from the
 * topology, probing, and the pod MTU.
 *
 * Why it is this way: programming is level-triggered (the whole wanted state on every change
 * and on a timer, debounced, never overlapping), so a missed event or a restart heals on the
 * next round. The pod MTU has one owner, here: the smallest an overlay in use carries, unless
 * the operator set it. Until an underlay is known there is no data path, and `verify` says so.
 */
import { TypedEmitter } from '../common/events';
import type { Startable } from '../common/lifecycle';
import type { Logger } from '../common/log';
import type { PeerView } from '../mesh/topology';
import type { Overlay, OverlayPeer, OverlayPeerStatus, Underlay } from './overlay';

/** Before the underlay is known: Ethernet's 1500 less VXLAN. */
const PROVISIONAL_MTU = 1450;

export interface DataPathComponents {
  self: string;
  /** The peers as the mesh knows them, and the next hop towards each. */
  mesh: { peers(): PeerView[]; nextHop(peer: string): string | undefined };
  /** Builds the overlays once the underlay is known (kernel VXLAN first). */
  overlays: (u: Underlay) => Overlay[];
  log: Logger;
}

export interface DataPathInit {
  /** Operator's pod MTU (--mtu), overriding the overlays'. */
  mtu?: number;
  programMs: number;
  probeMs: number;
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
  private programming: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private readonly timers: NodeJS.Timeout[] = [];
  private mtu: number;

  constructor(
    private readonly c: DataPathComponents,
    private readonly o: DataPathInit,
  ) {
    this.mtu = o.mtu ?? PROVISIONAL_MTU;
  }

  /** The MTU pods get. */
  get podMtu(): number {
    return this.mtu;
  }

  get ready(): boolean {
    return this.underlay !== undefined;
  }

  async start(): Promise<void> {
    const every = (ms: number, f: () => void) => {
      const t = setInterval(f, ms);
      t.unref();
      this.timers.push(t);
    };
    every(this.o.programMs, () => this.schedule());
    every(this.o.probeMs, () => void this.probeAll());
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
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
    return this.status.get(peer);
  }

  /** Reprograms soon (debounced; a call while programming runs one more round after it). */
  schedule(): void {
    if (this.stopped || this.overlays.length === 0) return;
    if (this.programming) {
      this.again = true;
      return;
    }
    this.programming = (async () => {
      do {
        this.again = false;
        try {
          await this.program();
        } catch (e) {
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

  /** The overlay that carries a peer: the first one whose probe has not failed, else the first. */
  private choose(p: OverlayPeer): Overlay {
    return this.overlays.find((ov) => this.health.get(`${ov.name}/${p.name}`) !== false) ?? this.overlays[0]!;
  }

  private async program(): Promise<void> {
    const byOverlay = new Map<Overlay, OverlayPeer[]>(this.overlays.map((ov) => [ov, []]));
    const peers = this.peers();
    for (const p of peers) {
      const ov = this.choose(p);
      byOverlay.get(ov)!.push(p);
      this.status.set(p.name, { overlay: ov.name, encrypted: ov.encrypted, via: p.via, healthy: this.health.get(`${ov.name}/${p.name}`) });
    }
    for (const name of [...this.status.keys()]) if (!peers.some((p) => p.name === name)) this.status.delete(name);
    for (const [ov, ps] of byOverlay) await ov.program(ps);
  }

  private async probeAll(): Promise<void> {
    if (this.overlays.length === 0) return;
    const carried = this.peers().filter((p) => p.reachable && p.gateway);
    let changed = false;
    await Promise.all(
      carried.map(async (p) => {
        const ov = this.choose(p);
        const ok = await ov.probe(p);
        const key = `${ov.name}/${p.name}`;
        if (this.health.get(key) !== ok) {
          this.c.log.info({ peer: p.name, nickname: p.nickname, overlay: ov.name, ok }, 'data path to peer');
          changed = true;
        }
        this.health.set(key, ok);
      }),
    );
    if (changed) this.schedule();
  }
}
