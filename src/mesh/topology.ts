/**
 * The topology channel: every peer's own entry (name, nickname, address, established
 * connections, and what other parts publish about it), and the routes derived from it.
 *
 * A peer's entry is its own to write: a copy of this router's entry coming back from an older
 * incarnation (another UID) is ignored, and the periodic refresh re-asserts the current one.
 * What parts publish (`meta`) has a schema; an entry whose meta does not fit it is refused.
 */
import * as z from 'zod/mini';
import { VersionedMap, type MapData, type Versioned } from '../common/crdt';
import { computeRoutes, type RouteTable } from './routes';
import type { Gossiper } from './gossip';

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
});
export type PeerMeta = z.infer<typeof peerMetaSchema>;

/** A peer's own entry in the topology channel. */
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

const entrySchema = z.looseObject({
  name: z.string(),
  nickname: z.string(),
  uid: z.string(),
  addr: z.optional(z.string()),
  conns: z.array(z.string()),
  meta: peerMetaSchema,
  v: z.number(),
});

export interface PeerView extends PeerEntry {
  reachable: boolean;
}

export class Topology implements Gossiper<PeerEntry> {
  readonly map = new VersionedMap<PeerEntry>();
  private table: RouteTable;

  constructor(
    private readonly self: { name: string; uid: string },
    /** Called after routes were recomputed, with whether the reachable set changed. */
    private readonly changed: (reachabilityChanged: boolean) => void,
  ) {
    this.table = computeRoutes(self.name, []);
  }

  full(): MapData<PeerEntry> {
    return this.map.toData();
  }

  merge(data: MapData<PeerEntry>): MapData<PeerEntry> | undefined {
    const valid: MapData<PeerEntry> = {};
    for (const [k, e] of Object.entries(data)) {
      if (k === this.self.name && e.uid !== this.self.uid) continue;
      const p = entrySchema.safeParse(e);
      if (p.success && p.data.name === k) valid[k] = p.data as Versioned<PeerEntry>;
    }
    const delta = this.map.merge(valid);
    if (delta) this.recompute();
    return delta;
  }

  /** Writes this router's own entry; returns it as a delta to gossip. */
  setSelf(e: PeerEntry): MapData<PeerEntry> {
    const v = this.map.set(e.name, e);
    this.recompute();
    return { [e.name]: v };
  }

  /** Drops a peer's entry (after `weft rmpeer`). */
  remove(name: string): void {
    this.map.delete(name);
    this.recompute();
  }

  get(name: string): Versioned<PeerEntry> | undefined {
    return this.map.get(name);
  }

  get routes(): RouteTable {
    return this.table;
  }

  isReachable(peer: string): boolean {
    return this.table.reachable.has(peer);
  }

  peers(): PeerView[] {
    return this.map.values().map((e) => ({ ...e, reachable: this.table.reachable.has(e.name) }));
  }

  private recompute(): void {
    const before = this.table.reachable;
    this.table = computeRoutes(this.self.name, this.map.values());
    const now = this.table.reachable;
    this.changed(before.size !== now.size || [...now].some((n) => !before.has(n)));
  }
}
