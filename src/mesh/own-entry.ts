/**
 * This router's entry in the topology: its address, its established connections and the values
 * it publishes, gossiped again whenever one of them changes.
 */
import type { SelfIdentity } from './connection';
import type { ChannelHandle } from './gossip';
import type { PeerMeta, Topology } from './topology';

export interface OwnEntryComponents {
  self: SelfIdentity;
  topology: Topology;
  /** The topology's gossip channel. */
  channel: ChannelHandle<unknown>;
  /** The peers this router has an established connection to. */
  neighbours(): Iterable<string>;
}

export class OwnEntry {
  private meta: PeerMeta = {};

  constructor(
    private readonly c: OwnEntryComponents,
    private advertise: string | undefined,
    /** The largest mesh in which every router connects to every other. */
    private readonly fullMeshUpTo: number,
  ) {}

  /** Publishes values about this router. */
  publish(meta: Partial<PeerMeta>): void {
    const next = { ...this.meta, ...meta };
    if (JSON.stringify(next) === JSON.stringify(this.meta)) return;
    this.meta = next;
    this.write();
  }

  /** The address peers dial this router at (known late when the underlay is learnt from a connection). */
  setAdvertise(addr: string | undefined): void {
    if (addr === this.advertise) return;
    this.advertise = addr;
    this.write();
  }

  /**
   * Past the full-mesh size, publishes how many peers this router knows, in quarter steps of
   * that size up to twice it (beyond, the plan is the same): peers that know fewer plan for it.
   * A few changes of the entry in a router's life, none in a mesh at or under the size.
   */
  publishPeersKnown(): void {
    const limit = this.fullMeshUpTo;
    const known = this.c.topology.size;
    const step = Math.max(1, Math.floor(limit / 4));
    const peers = known > limit ? Math.min(2 * limit, Math.max(limit + 1, Math.floor(known / step) * step)) : undefined;
    if (peers === this.meta.peers) return;
    this.meta = { ...this.meta, peers };
    if (peers === undefined) delete this.meta.peers;
    this.write();
  }

  /** Writes this router's entry and connections, and gossips what changed. */
  write(): void {
    const { name, nickname, uid } = this.c.self;
    const conns = [...new Set(this.c.neighbours())].sort();
    const d = this.c.topology.setSelf({ name, nickname, uid, addr: this.advertise, conns, meta: this.meta });
    if (d) this.c.channel.gossip(d);
  }

  /** Gossips this router's keys written again over stale copies of them (see Topology.answerStale). */
  reassert(): void {
    const d = this.c.topology.takeReassertion();
    if (d) this.c.channel.gossip(d);
  }
}
