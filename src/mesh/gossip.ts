/**
 * Gossip channels (after weaveworks/mesh's Gossip/Gossiper pair).
 *
 * Why it is this way: every channel is a versioned-map CRDT (`src/common/crdt.ts`), so the
 * mesh only moves maps. A local change goes out as a delta to every neighbour, batched for a
 * few milliseconds. A router passes on the part of a delta that was new to it, but not to
 * neighbours of the router it came from: that one reached them itself (the originator sends to
 * all its neighbours, and every relay skips only neighbours its sender has). Where a channel
 * names each key's writer (the topology does), the rule goes by writer instead: nothing to the
 * writer's own neighbours, and to a router two hops from it one copy, from the common
 * neighbour the pair designates (relayTargets in relay.ts). So a delta crosses the mesh about once per
 * router instead of once per connection; in a forming full mesh of 100, topology gossip fell
 * from 8 MiB to about 3 MiB per router (`npm run sim`). Routers in sync are
 * kept so by digests: a hash per bucket of keys, exchanged when a connection opens and then
 * periodically; only buckets that differ are sent, so a new connection to a peer that knows
 * the same costs a digest, not the whole state. A large state is digested in more buckets
 * (about 16 keys each; see bucketsFor), so repairing one key does not send thousands. A channel is registered once and handed back
 * as a typed handle; a second registration of a name is a programming error.
 */
import { BUCKETS, bucketOf, bucketsFor, combineInto, entryHash, validBuckets, type MapData } from '../common/crdt';

export { BUCKETS };

/** The state behind a channel. */
export interface Gossiper<T> {
  /** The whole state (for digests and the buckets a peer lacks, when the two below are absent). */
  full(): MapData<T>;
  /** The digest in `buckets` buckets (BUCKETS by default), kept as the state changes (a VersionedMap's); computed from `full()` when absent. */
  digest?(buckets?: number): number[];
  /** The entries in the given buckets of a digest of `of` buckets; taken from `full()` when absent. */
  inBuckets?(buckets: Iterable<number>, of?: number): MapData<T>;
  /** How many keys the state holds (its digest gets finer as it grows); BUCKETS buckets when absent. */
  keyCount?(): number;
  /** Merges what a peer sent; returns the delta that was new here, or undefined. */
  merge(data: MapData<T>, from: string): MapData<T> | undefined;
  /**
   * The router that writes `key`, when each key has one writer: what is relayed is then chosen
   * per writer (`GossipComponents.relayTargets` with an origin). Without it, by the sender alone.
   */
  originOf?(key: string): string | undefined;
}

/** What a part holds after registering: the way to spread its changes. */
export interface ChannelHandle<T> {
  readonly name: string;
  /** Spreads a local change (batched) to every peer. */
  gossip(delta: MapData<T>): void;
}

/** A gossip frame on the wire; `a` marks an answer to a digest (sent to one peer only). */
export interface GossipFrame {
  t: 'gossip';
  ch: string;
  data: MapData<unknown>;
  a?: boolean;
}

/** A digest frame: for each channel, per bucket, a hash of the keys and versions in it. */
export interface DigestFrame {
  t: 'digest';
  d: { ch: string; h: number[] }[];
}

export interface GossipComponents {
  /** Sends a frame to every established connection whose peer `skip` does not exclude. */
  broadcast(frame: GossipFrame, skip?: (peer: string) => boolean): void;
  /** The peers of the established connections. */
  neighbours(): Iterable<string>;
  /**
   * Which of `neighbours` get what came from `from` (the relay rules; see relayTargets in
   * relay.ts): `origin`, when known, is the router that wrote it; `answered`: it came in answer
   * to our digest (its sender gave it to us alone).
   */
  relayTargets(from: string, origin: string | undefined, answered: boolean, neighbours: readonly string[]): Iterable<string>;
}

export class DuplicateChannelError extends Error {}

/** Local changes are batched this long; what a router passes on, RELAY_MS (see flush). */
export const BATCH_MS = 20;
export const RELAY_MS = 200;

/** Per bucket (`buckets` of them), the sum of the hashes of each key with its whole entry (see VersionedMap.digest). */
export function digestOf(data: MapData<unknown>, buckets = BUCKETS): number[] {
  const h = new Array<number>(buckets).fill(0);
  for (const [k, e] of Object.entries(data)) {
    const b = bucketOf(k, buckets);
    h[b] = (h[b]! + entryHash(k, e)) >>> 0;
  }
  return h;
}

/** The buckets where two digests differ. */
export function differing(ours: readonly number[], theirs: readonly number[]): number[] {
  const out: number[] = [];
  for (let b = 0; b < theirs.length; b++) if (ours[b] !== theirs[b]) out.push(b);
  return out;
}

/** The entries of `data` in the buckets where `theirs` differs from ours. */
export function missingFrom(data: MapData<unknown>, theirs: readonly number[]): MapData<unknown> | undefined {
  const differ = new Set(differing(digestOf(data, theirs.length), theirs));
  if (differ.size === 0) return undefined;
  const out: MapData<unknown> = {};
  let any = false;
  for (const [k, e] of Object.entries(data)) {
    if (!differ.has(bucketOf(k, theirs.length))) continue;
    out[k] = e;
    any = true;
  }
  return any ? out : undefined;
}

export class Gossip {
  private readonly channels = new Map<string, Gossiper<unknown>>();
  /**
   * Batched deltas by channel, by the peer they came from ('' for local changes) and by how far
   * they go: by the relay rule, or (`all`) to every neighbour but the sender and, by writer, the
   * writer's neighbours (what came in a digest answer: its sender gave it to us alone).
   */
  private readonly pending = new Map<string, { ch: string; from: string; all: boolean; data: MapData<unknown> }>();
  private timer: NodeJS.Timeout | undefined;
  private relayTimer: NodeJS.Timeout | undefined;

  constructor(private readonly c: GossipComponents) {}

  register<T>(name: string, g: Gossiper<T>): ChannelHandle<T> {
    if (this.channels.has(name)) throw new DuplicateChannelError(`gossip channel "${name}" is registered already`);
    this.channels.set(name, g as Gossiper<unknown>);
    return { name, gossip: (delta) => this.queue(name, '', false, delta as MapData<unknown>) };
  }

  private queue(ch: string, from: string, all: boolean, delta: MapData<unknown>): void {
    const key = `${ch}\0${from}\0${all}`;
    const prev = this.pending.get(key);
    // the batch is this object's own copy, added to in place: combining into a new map per
    // frame would copy the whole batch each time (quadratic in a burst of thousands of keys)
    if (prev) combineInto(prev.data, delta);
    else this.pending.set(key, { ch, from, all, data: { ...delta } });
    if (from) this.relayTimer ??= setTimeout(() => this.flush(true), RELAY_MS);
    else this.timer ??= setTimeout(() => this.flush(false), BATCH_MS);
  }

  /**
   * Sends what is batched now: local changes, or (`relayed`) what came from peers. Relays wait
   * longer, and the relay rule is applied when they leave: in a forming mesh the sender's new
   * connections are often known by then, and each one known is a copy not sent.
   */
  flush(relayed?: boolean): void {
    if (relayed !== false) {
      clearTimeout(this.relayTimer);
      this.relayTimer = undefined;
    }
    if (relayed !== true) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    for (const [key, { ch, from, all, data }] of this.pending) {
      if (relayed !== undefined && !!from !== relayed) continue;
      this.pending.delete(key);
      if (!from) this.c.broadcast({ t: 'gossip', ch, data });
      else this.relay(ch, from, all, data);
    }
  }

  /**
   * Passes on what came from `from` (`answered`: in answer to our digest), by the relay rule
   * for each key's writer: each neighbour gets the writers' keys the rule gives it, and
   * neighbours that get the same share a frame.
   */
  private relay(ch: string, from: string, answered: boolean, data: MapData<unknown>): void {
    const g = this.channels.get(ch);
    const originOf = g?.originOf?.bind(g);
    const peers = [...this.c.neighbours()].filter((p) => p !== from);
    if (!originOf) {
      const to = new Set(this.c.relayTargets(from, undefined, answered, peers));
      if (to.size) this.c.broadcast({ t: 'gossip', ch, data }, (peer) => !to.has(peer));
      return;
    }
    const groups = new Map<string | undefined, MapData<unknown>>();
    for (const [k, e] of Object.entries(data)) {
      const o = originOf(k);
      let g = groups.get(o);
      if (!g) groups.set(o, (g = {}));
      g[k] = e;
    }
    // per neighbour, the writers whose keys it gets; neighbours that get the same share a frame
    const picked = new Map<string, (string | undefined)[]>();
    for (const o of groups.keys()) {
      for (const t of this.c.relayTargets(from, o, answered, peers)) {
        const l = picked.get(t);
        if (l) l.push(o);
        else picked.set(t, [o]);
      }
    }
    const frames = new Map<string, { picked: (string | undefined)[]; to: Set<string> }>();
    for (const [peer, os] of picked) {
      const sig = os.map((o) => o ?? '').join('\n');
      let f = frames.get(sig);
      if (!f) frames.set(sig, (f = { picked: os, to: new Set() }));
      f.to.add(peer);
    }
    for (const { picked: os, to } of frames.values()) {
      const d = os.length === 1 ? groups.get(os[0])! : Object.assign({}, ...os.map((o) => groups.get(o)));
      this.c.broadcast({ t: 'gossip', ch, data: d }, (peer) => !to.has(peer));
    }
  }

  /** A frame from a peer: merged, and what was new passed on. Unknown channels are ignored. */
  receive(f: { ch: string; data: MapData<unknown>; a?: boolean }, from: string): void {
    const g = this.channels.get(f.ch);
    if (!g) return;
    const delta = g.merge(f.data, from);
    if (delta) this.queue(f.ch, from, f.a === true, delta);
  }

  /**
   * This router's digest of every channel: `fine`, each as fine as its size calls for (see
   * bucketsFor; peers of protocol 2 and later); otherwise BUCKETS buckets, as every peer reads.
   */
  digest(fine = true): DigestFrame {
    return {
      t: 'digest',
      d: [...this.channels].map(([ch, g]) => {
        const n = fine && g.keyCount ? bucketsFor(g.keyCount()) : BUCKETS;
        return { ch, h: g.digest?.(n) ?? digestOf(g.full(), n) };
      }),
    };
  }

  /** Answers a peer's digest: for each channel, the entries in the buckets where we differ (at the digest's own fineness). */
  answer(d: DigestFrame): GossipFrame[] {
    const out: GossipFrame[] = [];
    for (const { ch, h } of d.d) {
      const g = this.channels.get(ch);
      if (!g || !validBuckets(h.length)) continue;
      let data: MapData<unknown> | undefined;
      if (g.digest && g.inBuckets) {
        const differ = differing(g.digest(h.length), h);
        data = differ.length ? g.inBuckets(differ, h.length) : undefined;
        if (data && Object.keys(data).length === 0) data = undefined;
      } else data = missingFrom(g.full(), h);
      if (data) out.push({ t: 'gossip', ch, data, a: true });
    }
    return out;
  }

  stop(): void {
    clearTimeout(this.timer);
    clearTimeout(this.relayTimer);
    this.timer = this.relayTimer = undefined;
    this.pending.clear();
  }
}
