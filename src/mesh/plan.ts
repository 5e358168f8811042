/**
 * Which peers this router connects to. Up to the full-mesh size, every peer it learns of; past
 * it, the neighbour ring's (neighbours.ts): the peers it keeps, and the sparser set it dials.
 *
 * Why it is this way: the plan is recomputed only when the peers known change (a version the
 * topology keeps), not per gossip frame; a forming mesh plans for the size its entries show,
 * which spread faster than routes, so it goes through the sizes just past the limit without
 * connecting nearly everyone first (new connections follow the plan of a mesh well past it).
 */
import { DEFAULT_PLAN, NeighbourRing } from './neighbours';

/** What the plan reads of the topology. */
export interface PlanTopology {
  /** Bumped whenever a peer's name or address is added or removed. */
  readonly namesVersion: number;
  readonly size: number;
  peerNames(): Iterable<string>;
  addrOf(name: string): string | undefined;
}

/** A connection target, as the connection maker asks about it. */
export interface PlanTarget {
  addr: string;
  peer?: string;
  explicit: boolean;
}

export class MeshPlan {
  private ring: NeighbourRing | undefined;
  private mine: ReadonlySet<string> = new Set();
  private dialled: ReadonlySet<string> = new Set();
  private size = 0;
  private at = -1;
  private readonly nameByAddr = new Map<string, string>();
  private nameByAddrAt = -1;

  constructor(
    private readonly self: string,
    private readonly topology: PlanTopology,
    /** The largest mesh in which every router connects to every other. */
    private readonly fullMeshUpTo: number,
    /** How addresses are compared (the connection maker's normal form). */
    private readonly norm: (addr: string) => string,
  ) {}

  /** Past the full-mesh size: connections follow the ring. */
  get large(): boolean {
    return this.ring !== undefined;
  }

  /** Whether this router keeps its connection to `peer` (always, in a full mesh). */
  keeps(peer: string): boolean {
    return !this.ring || this.mine.has(peer);
  }

  /** Plans again when the peers known or `size` changed; cheap otherwise. */
  update(size: number): void {
    if (size === this.size && this.topology.namesVersion === this.at) return;
    this.size = size;
    this.at = this.topology.namesVersion;
    const names = [...this.topology.peerNames()];
    const ring = new NeighbourRing(names, { ...DEFAULT_PLAN, fullMeshUpTo: this.fullMeshUpTo }, size);
    this.ring = ring.full ? undefined : ring;
    this.mine = this.ring ? this.ring.neighbours(this.self) : new Set();
    this.dialled = this.ring ? new NeighbourRing(names, { ...DEFAULT_PLAN, fullMeshUpTo: 0 }).neighbours(this.self) : new Set();
  }

  /** The peers to dial: in a large mesh the plan's (reachable or not yet); undefined in a full mesh (every reachable peer). */
  toDial(): ReadonlySet<string> | undefined {
    return this.ring ? this.dialled : undefined;
  }

  /** Whether the connection maker may dial `t`, with `established` connections open now. */
  wanted(t: PlanTarget, established: number, minDegree: number): boolean {
    if (!this.ring) return true;
    const peer = t.peer ?? this.peerAt(t.addr);
    if (peer) return this.dialled.has(peer);
    // an address not yet known by name: only to get into the mesh at all
    return t.explicit && established < minDegree;
  }

  /** The peer that publishes `addr` (normalised), by the topology as it is now. */
  peerAt(addr: string): string | undefined {
    if (this.nameByAddrAt !== this.topology.namesVersion) {
      this.nameByAddrAt = this.topology.namesVersion;
      this.nameByAddr.clear();
      for (const name of this.topology.peerNames()) {
        const a = this.topology.addrOf(name);
        if (a) this.nameByAddr.set(this.norm(a), name);
      }
    }
    return this.nameByAddr.get(addr);
  }
}
