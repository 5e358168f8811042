/**
 * Gossip channels (after weaveworks/mesh's Gossip/Gossiper pair).
 *
 * Why it is this way: every channel is a versioned-map CRDT (`src/common/crdt.ts`), so the
 * mesh only moves maps: a change goes out as a delta, batched for a few milliseconds; a router
 * passes on the part of a delta that was new to it, so state floods a partially connected mesh
 * too; a new connection gets the full state of every channel, and all of it is re-sent
 * periodically to heal anything lost. A channel is registered once and handed back as a typed
 * handle; a second registration of a name is a programming error.
 */
import { combine, type MapData } from '../common/crdt';

/** The state behind a channel. */
export interface Gossiper<T> {
  /** The whole state, for new peers and the periodic refresh. */
  full(): MapData<T>;
  /** Merges what a peer sent; returns the delta that was new here, or undefined. */
  merge(data: MapData<T>, from: string): MapData<T> | undefined;
}

/** What a part holds after registering: the way to spread its changes. */
export interface ChannelHandle<T> {
  readonly name: string;
  /** Spreads a local change (batched) to every peer. */
  gossip(delta: MapData<T>): void;
}

/** A gossip frame on the wire. */
export interface GossipFrame {
  t: 'gossip';
  ch: string;
  data: MapData<unknown>;
}

export interface GossipComponents {
  /** Sends a frame to every established connection. */
  broadcast(frame: GossipFrame): void;
}

export class DuplicateChannelError extends Error {}

export const BATCH_MS = 20;

export class Gossip {
  private readonly channels = new Map<string, Gossiper<unknown>>();
  private readonly pending = new Map<string, MapData<unknown>>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly c: GossipComponents) {}

  register<T>(name: string, g: Gossiper<T>): ChannelHandle<T> {
    if (this.channels.has(name)) throw new DuplicateChannelError(`gossip channel "${name}" is registered already`);
    this.channels.set(name, g as Gossiper<unknown>);
    return { name, gossip: (delta) => this.queue(name, delta as MapData<unknown>) };
  }

  private queue(name: string, delta: MapData<unknown>): void {
    const prev = this.pending.get(name);
    this.pending.set(name, prev ? combine(prev, delta) : delta);
    this.timer ??= setTimeout(() => this.flush(), BATCH_MS);
  }

  /** Sends what is batched now. */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    for (const [ch, data] of this.pending) this.c.broadcast({ t: 'gossip', ch, data });
    this.pending.clear();
  }

  /** A frame from a peer: merged, and what was new passed on. Unknown channels are ignored. */
  receive(ch: string, data: MapData<unknown>, from: string): void {
    const g = this.channels.get(ch);
    if (!g) return;
    const delta = g.merge(data, from);
    if (delta) this.queue(ch, delta);
  }

  /** Every channel's whole state, for a new connection. */
  fullFrames(): GossipFrame[] {
    return [...this.channels].map(([ch, g]) => ({ t: 'gossip', ch, data: g.full() }));
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.pending.clear();
  }
}
