/**
 * The topology channel: every peer's own entry (name, nickname, address, what other parts
 * publish about it) and its connections, and the routes derived from them.
 *
 * Why it is this way: a peer's entry and each of its connections are separate keys of the map
 * (`p:NAME`, `e:FROM>TO`), so a new connection costs the mesh a few dozen bytes, not the whole
 * connection list of every peer (in a full mesh of N, a join would otherwise move N lists of N
 * names to every router). Each key has one writer, the peer it names first; a copy of one of
 * this router's own keys coming back from an older incarnation is answered by writing this
 * router's current value over it. What parts publish (`meta`) has a schema; an entry that does
 * not fit it is refused. Routes are recomputed lazily, when asked for after a change.
 */
import * as z from 'zod/mini';
import { canonical, sameValue, VersionedMap, type MapData, type Versioned } from '../common/crdt';
import { RouteCache, type RouteTable } from './routes';
import type { Gossiper } from './gossip';
import { relayTargets, type RelayView } from './relay';

const ipv4 = z.string().check(z.regex(/^\d{1,3}(\.\d{1,3}){3}$/));
const mac = z.string().check(z.regex(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/));

/** What the router's parts publish about their peer; unknown keys pass (newer peers). */
export const peerMetaSchema = z.looseObject({
  /** Underlay address its data path listens on. */
  underlay: z.optional(ipv4),
  /** MAC of its bridge. */
  bridgeMac: z.optional(mac),
  /** Its bridge's address on the pod network (the probe target). */
  gateway: z.optional(ipv4),
  /**
   * How many peers it knows, once past the full-mesh size (in steps; see Mesh): a router that
   * knows fewer plans for this size, so a forming large mesh does not first connect everyone.
   */
  peers: z.optional(z.number().check(z.int(), z.nonnegative())),
});
export type PeerMeta = z.infer<typeof peerMetaSchema>;

/** A peer as the rest of the router sees it. */
export interface PeerEntry {
  name: string;
  nickname: string;
  /** Random per start of its router. */
  uid: string;
  /** ip:port others can dial, when known. */
  addr?: string;
  /** Peers it has established connections to, sorted. */
  conns: string[];
  meta: PeerMeta;
}

export interface PeerView extends PeerEntry {
  reachable: boolean;
}

const peerSchema = z.object({ nickname: z.string(), uid: z.string(), addr: z.optional(z.string()), meta: peerMetaSchema, v: z.number() });
const edgeSchema = z.object({ up: z.boolean(), v: z.number() });

type PeerValue = Omit<PeerEntry, 'name' | 'conns'>;

/**
 * The tombstone of a dropped connection leaves digests and answers this long after it was
 * written: two digest refreshes at the router's default (30 s), so a router that missed it as
 * a delta has had two chances to get it from a neighbour's answer first.
 */
export const QUIET_TOMBSTONE_MS = 60_000;
type EdgeValue = { up: boolean };
/** A value of the channel: a peer (`p:NAME`) or a connection (`e:FROM>TO`). */
export type TopoValue = PeerValue | EdgeValue;

const peerKey = (n: string) => `p:${n}`;
const edgeKey = (a: string, b: string) => `e:${a}>${b}`;
/** Whether `k` has the shape of a key of this channel: a peer or a connection. */
const isTopoKey = (k: string) => k.startsWith('p:') || (k.startsWith('e:') && k.includes('>'));
/** The peer that writes a key. */
const writerOf = (k: string) => (k.startsWith('p:') ? k.slice(2) : k.slice(2, k.indexOf('>')));

const NONE: ReadonlySet<string> = new Set();

export class Topology implements Gossiper<TopoValue> {
  private readonly map: VersionedMap<TopoValue>;
  /** Up edges by writer (derived from the map). */
  private readonly out = new Map<string, Set<string>>();
  /**
   * Peers adjacent to each peer: either of the pair reports the connection (derived from `out`).
   * The relay rules ask this for every neighbour of every relayed batch, so it is one lookup.
   */
  private readonly adj = new Map<string, Set<string>>();
  /** This router's own keys: its entry, and the prefix of its edges. */
  private readonly ownPeerKey: string;
  private readonly ownEdgePrefix: string;
  /** Each peer name met in an edge key, once (see nameOf). */
  private readonly interned = new Map<string, string>();
  /** The peers with an entry (derived from the map). */
  private readonly names = new Set<string>();
  /** Counts changes to `names` (a peer came or went). */
  namesVersion = 0;
  /** What each peer publishes as the peers it knows (meta.peers), where it does. */
  private readonly published = new Map<string, number>();
  private largest = 0;
  /** The routes, made stale when an up edge or a peer comes or goes (a peer's values changing does not count). */
  readonly routing: RouteCache;
  private view: PeerView[] | undefined;
  /** Each peer's connections, sorted, built when first asked after a change of its edges. */
  private readonly sortedConns = new Map<string, string[]>();
  private mine = new Set<string>();
  /** When each of this router's own keys was last written (see ownSince). */
  private readonly ownWritten = new Map<string, number>();

  constructor(
    private readonly self: { name: string; uid: string },
    /** Called after a change (routes not yet recomputed). */
    private readonly changed: () => void,
    /** How old (ms) the tombstone of a dropped connection is when it leaves digests and answers (see QuietRule). */
    quietAfterMs = QUIET_TOMBSTONE_MS,
  ) {
    this.map = new VersionedMap<TopoValue>({ tombstone: (e) => (e as EdgeValue).up === false, afterMs: quietAfterMs });
    this.ownPeerKey = peerKey(self.name);
    this.ownEdgePrefix = `e:${self.name}>`;
    this.routing = new RouteCache(self.name, { names: () => this.names, conns: (n) => this.out.get(n) }, () => (this.view = undefined));
    this.relayView = {
      self: self.name,
      conns: (p) => this.out.get(p),
      adjacent: (a, b) => this.adj.get(a)?.has(b) ?? false,
      around: (p) => this.adj.get(p) ?? NONE,
      degree: (p) => this.adj.get(p)?.size ?? 0,
    };
  }

  full(): MapData<TopoValue> {
    return this.map.toData();
  }

  digest(buckets?: number): number[] {
    return this.map.digest(buckets);
  }

  inBuckets(buckets: Iterable<number>, of?: number): MapData<TopoValue> {
    return this.map.inBuckets(buckets, of);
  }

  keyCount(): number {
    return this.map.digestSize;
  }

  merge(data: MapData<TopoValue>, _from?: string): MapData<TopoValue> | undefined {
    const valid: MapData<TopoValue> = {};
    for (const k in data) {
      if (!Object.hasOwn(data, k) || !isTopoKey(k)) continue;
      const e = data[k];
      const own = k === this.ownPeerKey || k.startsWith(this.ownEdgePrefix);
      // most of what arrives is known already (several neighbours pass on each change):
      // an older or the same copy changes nothing, so it is neither checked nor merged
      const cur = this.map.get(k);
      if (cur && typeof e?.v === 'number' && (e.v < cur.v || (e.v === cur.v && sameValue(e, cur))) && !own) {
        // an older copy of a connection dropped long ago: its sender missed the tombstone, which
        // no digest answer carries any more (see QuietRule), so it is sent again, to every neighbour
        if (e.v < cur.v && this.map.isQuiet(k)) (this.reassert ??= {})[k] = cur;
        continue;
      }
      const p = (k.startsWith('p:') ? peerSchema : edgeSchema).safeParse(e);
      if (!p.success) continue;
      if (own) this.answerStale(k, p.data as Versioned<TopoValue>);
      else valid[k] = p.data as Versioned<TopoValue>;
    }
    const delta = this.map.merge(valid);
    if (delta) {
      for (const k of Object.keys(delta)) this.index(k);
      this.touch();
    }
    return delta;
  }

  /** Own keys written again over stale copies, and quiet tombstones answering stale copies, waiting to be gossiped (see takeReassertion). */
  private reassert: MapData<TopoValue> | undefined;

  /**
   * One of this router's own keys came from elsewhere: an older incarnation's copy. When it
   * differs from ours, ours (or, for a connection we do not have, a tombstone) is written again
   * at a version above it, so every router drops the stale copy.
   */
  private answerStale(k: string, theirs: Versioned<TopoValue>): void {
    const cur = this.map.get(k);
    if (cur && canonical(cur) === canonical(theirs)) return;
    if (cur && cur.v > theirs.v) {
      (this.reassert ??= {})[k] = cur;
      return;
    }
    const value: TopoValue = cur ? { ...cur } : { up: false };
    const e = { ...value, v: Math.max(theirs.v, cur?.v ?? 0) + 1 } as Versioned<TopoValue>;
    this.map.put(k, e);
    this.index(k);
    this.ownWritten.set(k, Date.now());
    (this.reassert ??= {})[k] = e;
  }

  /** The own keys to gossip again, once. */
  takeReassertion(): MapData<TopoValue> | undefined {
    const r = this.reassert;
    this.reassert = undefined;
    return r;
  }

  /** Writes this router's own entry and connections; returns the delta to gossip (undefined when unchanged). */
  setSelf(e: PeerEntry): MapData<TopoValue> | undefined {
    const delta: MapData<TopoValue> = {};
    const pk = peerKey(e.name);
    const value: PeerValue = { nickname: e.nickname, uid: e.uid, addr: e.addr, meta: e.meta };
    const cur = this.map.get(pk) as Versioned<PeerValue> | undefined;
    if (!cur || canonical({ nickname: cur.nickname, uid: cur.uid, addr: cur.addr, meta: cur.meta }) !== canonical(value)) {
      delta[pk] = this.map.set(pk, value);
      this.index(pk);
      this.ownWritten.set(pk, Date.now());
    }
    const want = new Set(e.conns);
    for (const peer of new Set([...want, ...this.mine])) {
      const k = edgeKey(e.name, peer);
      const up = want.has(peer);
      const had = this.map.get(k) as Versioned<EdgeValue> | undefined;
      if (had?.up === up) continue;
      if (!had && !up) continue;
      delta[k] = this.map.set(k, { up });
      this.index(k);
      this.ownWritten.set(k, Date.now());
    }
    this.mine = want;
    if (Object.keys(delta).length === 0) return undefined;
    this.touch();
    return delta;
  }

  /** This router's own entry and up connections, as written last (what a new neighbour gets first). */
  own(): MapData<TopoValue> {
    const out: MapData<TopoValue> = {};
    const name = this.self.name;
    const p = this.map.get(peerKey(name));
    if (p) out[peerKey(name)] = p;
    for (const peer of this.mine) {
      const e = this.map.get(edgeKey(name, peer));
      if (e) out[edgeKey(name, peer)] = e;
    }
    return out;
  }

  /**
   * This router's own keys written at or after `since` (tombstones of connections included).
   * What a new neighbour may have missed: a change gossiped just before the connection reached
   * the others, and those relaying it, seeing the connection by then, left it to us.
   */
  ownSince(since: number): MapData<TopoValue> | undefined {
    let out: MapData<TopoValue> | undefined;
    for (const [k, at] of this.ownWritten) {
      if (at < since) continue;
      const e = this.map.get(k);
      if (e) (out ??= {})[k] = e;
    }
    return out;
  }

  /** Forgets a peer and its connections (after `weft rmpeer`). */
  remove(name: string): void {
    for (const k of this.map.keys()) if (writerOf(k) === name) this.map.delete(k);
    const outs = [...(this.out.get(name) ?? [])];
    this.out.delete(name);
    for (const b of outs) this.link(name, b);
    this.notePublished(name, undefined);
    if (this.names.delete(name)) this.namesVersion++;
    this.sortedConns.delete(name);
    this.routing.stale();
    this.touch();
  }

  /** Keeps `names` and `out` in step with key `k`; marks the routes stale when they change. */
  private index(k: string): void {
    if (k.startsWith('p:')) {
      const name = k.slice(2);
      this.notePublished(name, (this.map.get(k) as Versioned<PeerValue> | undefined)?.meta.peers);
      if (this.names.has(name) === (this.map.get(k) !== undefined)) return;
      if (this.map.get(k)) this.names.add(name);
      else this.names.delete(name);
      this.namesVersion++;
      this.routing.stale();
      return;
    }
    const a = this.nameOf(k.slice(2, k.indexOf('>')));
    const b = this.nameOf(k.slice(k.indexOf('>') + 1));
    const up = (this.map.get(k) as EdgeValue | undefined)?.up ?? false;
    let s = this.out.get(a);
    if (up === (s?.has(b) ?? false)) return;
    this.sortedConns.delete(a);
    if (up) {
      (s ??= this.out.set(a, new Set()).get(a)!).add(b);
    } else {
      s!.delete(b);
    }
    this.link(a, b);
    this.routing.stale();
  }

  /**
   * One string per peer name: the edge sets hold the same string for a name however many keys
   * it was cut from (in the simulation, cut strings were an eighth of the routers' heap).
   */
  private nameOf(cut: string): string {
    let n = this.interned.get(cut);
    if (n === undefined) this.interned.set(cut, (n = cut));
    return n;
  }

  /** Keeps `adj` in step for the pair `a`, `b` after one of their edges changed. */
  private link(a: string, b: string): void {
    const on = (this.out.get(a)?.has(b) ?? false) || (this.out.get(b)?.has(a) ?? false);
    const set = (x: string, y: string) => {
      const s = this.adj.get(x);
      if (on) (s ?? this.adj.set(x, new Set()).get(x)!).add(y);
      else s?.delete(y);
    };
    set(a, b);
    set(b, a);
  }

  private notePublished(name: string, peers: number | undefined): void {
    const had = this.published.get(name);
    if (had === peers) return;
    if (peers === undefined) this.published.delete(name);
    else this.published.set(name, peers);
    if ((peers ?? 0) >= this.largest) this.largest = peers ?? 0;
    else if (had === this.largest) this.largest = Math.max(0, ...this.published.values());
  }

  /** The largest number of peers any peer publishes that it knows (0 when none does). */
  get largestPublished(): number {
    return this.largest;
  }

  private touch(): void {
    this.view = undefined;
    this.changed();
  }

  /** Whether `a` reports an established connection to `b`. */
  reportsEdge(a: string, b: string): boolean {
    return this.out.get(a)?.has(b) ?? false;
  }

  /** Which of `neighbours` get what `from` sent this router (see relayTargets in relay.ts). */
  relayTargets(from: string, origin: string | undefined, answered: boolean, neighbours: Iterable<string>): string[] {
    return relayTargets(this.relayView, from, origin, answered, neighbours);
  }

  /** This router's view for the relay rules (made once: they run for every relayed batch). */
  private readonly relayView: RelayView;

  /** The writer of a key of this channel (see Gossiper.originOf). */
  originOf(key: string): string | undefined {
    return isTopoKey(key) ? writerOf(key) : undefined;
  }

  /** The routes (see RouteCache: recomputed lazily after a change). */
  get routes(): RouteTable {
    return this.routing.table;
  }

  isReachable(peer: string): boolean {
    return this.routes.reachable.has(peer);
  }

  get(name: string): PeerEntry | undefined {
    const p = this.map.get(peerKey(name)) as Versioned<PeerValue> | undefined;
    if (!p) return undefined;
    let conns = this.sortedConns.get(name);
    if (!conns) this.sortedConns.set(name, (conns = [...(this.out.get(name) ?? [])].sort()));
    return { name, nickname: p.nickname, uid: p.uid, addr: p.addr, meta: p.meta, conns };
  }

  /** The names of every known peer, this router included. */
  peerNames(): IterableIterator<string> {
    return this.names.values();
  }

  /** The address a peer published (ip:port), without building its whole entry. */
  addrOf(name: string): string | undefined {
    return (this.map.get(peerKey(name)) as Versioned<PeerValue> | undefined)?.addr;
  }

  /** How many peers are known, this router included. */
  get size(): number {
    return this.names.size;
  }

  /** Every known peer, as of the last change (the list is built once per change). */
  peers(): PeerView[] {
    if (!this.view) {
      const reach = this.routes.reachable;
      this.view = [...this.names].map((n) => ({ ...this.get(n)!, reachable: reach.has(n) }));
    }
    return this.view;
  }
}
