/**
 * Unicast routes from the topology alone: a pure function, tested without sockets, and the
 * cache that recomputes them lazily as the topology changes.
 *
 * Why it is this way: an edge counts only when both ends report it (a half-open or one-sided
 * connection carries nothing), and the search visits neighbours in name order, so every router
 * computing routes from the same topology gets the same next hops.
 */

/** What routing reads of a peer's topology entry. */
export interface RouteEntry {
  name: string;
  /** Peers it reports established connections to. */
  conns: readonly string[] | ReadonlySet<string>;
}

export interface RouteTable {
  /** Next hop towards each reachable peer (the peer itself when directly connected). */
  nextHop: Map<string, string>;
  /** Hops to each reachable peer, this router at 0. */
  distance: Map<string, number>;
  /** Peers reachable from `self`, `self` included. */
  reachable: Set<string>;
}

/** Breadth-first search from `self` over symmetric edges. */
export function computeRoutes(self: string, entries: Iterable<RouteEntry>): RouteTable {
  const conns = new Map<string, ReadonlySet<string> | readonly string[]>();
  for (const e of entries) conns.set(e.name, e.conns);
  const has = (n: string, m: string) => {
    const c = conns.get(n);
    return c ? ('has' in c ? c.has(m) : c.includes(m)) : false;
  };
  const nextHop = new Map<string, string>();
  const distance = new Map<string, number>([[self, 0]]);
  const queue: string[] = [self];
  // peers not yet reached, visited in name order (the same next hops everywhere); stops early
  // once every known peer is reached (in a full mesh, after self's own neighbours)
  for (let i = 0; i < queue.length && distance.size < conns.size; i++) {
    const n = queue[i]!;
    const fresh: string[] = [];
    for (const m of conns.get(n) ?? []) if (m !== n && !distance.has(m) && has(m, n)) fresh.push(m);
    fresh.sort();
    const d = distance.get(n)! + 1;
    for (const m of fresh) {
      if (distance.has(m)) continue;
      distance.set(m, d);
      nextHop.set(m, n === self ? m : nextHop.get(n)!);
      queue.push(m);
    }
  }
  return { nextHop, distance, reachable: new Set(distance.keys()) };
}

/** How often readers may see routes recomputed after a change (the mesh refreshes when it reacts). */
export const ROUTES_EVERY_MS = 50;

/** What routes are computed from: the known peers, and the connections each reports. */
export interface RouteGraph {
  names(): Iterable<string>;
  conns(name: string): ReadonlySet<string> | undefined;
}

/**
 * The routes over a graph that keeps changing, recomputed lazily: its owner calls `stale()`
 * when an edge or a peer comes or goes; readers of `table` see routes recomputed at most once
 * per `everyMs` (a burst of gossip changes the graph hundreds of times a second, and each
 * computation walks all of it); `refresh()` recomputes at once when stale.
 */
export class RouteCache {
  /** How often readers may see routes recomputed (ROUTES_EVERY_MS; the mesh stretches it in a large mesh). */
  everyMs = ROUTES_EVERY_MS;
  /** How many times routes were computed (for tests: a burst costs one). */
  computed = 0;
  private last: RouteTable | undefined;
  private at = 0;
  private dirty = true;

  constructor(
    private readonly self: string,
    private readonly graph: RouteGraph,
    /** Called after each computation. */
    private readonly recomputed: () => void = () => undefined,
  ) {}

  /** An edge or a peer came or went. */
  stale(): void {
    this.dirty = true;
  }

  get table(): RouteTable {
    if (!this.last || (this.dirty && Date.now() - this.at >= this.everyMs)) return this.refresh();
    return this.last;
  }

  refresh(): RouteTable {
    if (this.last && !this.dirty) return this.last;
    const none = new Set<string>();
    const entries = (function* (g: RouteGraph) {
      for (const name of g.names()) yield { name, conns: g.conns(name) ?? none };
    })(this.graph);
    this.last = computeRoutes(this.self, entries);
    this.computed++;
    this.at = Date.now();
    this.dirty = false;
    this.recomputed();
    return this.last;
  }
}
