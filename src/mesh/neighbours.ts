/**
 * Which peers a router keeps connections to once the mesh is too large for everyone to connect
 * to everyone: a pure function of the peer names, so every router computes the same answer.
 *
 * Why it is this way: up to a size (100 peers by default) the mesh is full, as Weave's was; at
 * 1,000 a full mesh means a million connections and a topology of a million keys on every
 * router. Beyond that size, peers sit on a ring ordered by a hash of their names; each keeps
 * its `k` nearest on either side (the ring stays connected) and `r` long links at fixed
 * fractions of the ring (paths stay short), a small-world graph of about 2k + 2r connections
 * per router. A connection is kept when either end prefers the other, so both ends agree on it.
 */

function fnv(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

export interface NeighbourPlan {
  k: number;
  r: number;
}

export const DEFAULT_PLAN: NeighbourPlan = { k: 3, r: 2 };

/** The peers ordered around the ring (by hash, then name). */
export class NeighbourRing {
  private readonly order: string[];
  private readonly index = new Map<string, number>();

  constructor(
    names: Iterable<string>,
    private readonly plan: NeighbourPlan = DEFAULT_PLAN,
  ) {
    this.order = [...new Set(names)].map((n) => [fnv(n), n] as const).sort((a, b) => a[0] - b[0] || (a[1] < b[1] ? -1 : 1)).map(([, n]) => n);
    this.order.forEach((n, i) => this.index.set(n, i));
  }

  get size(): number {
    return this.order.length;
  }

  /** The peers `name` prefers (empty when it is not on the ring). */
  preferred(name: string): Set<string> {
    const i = this.index.get(name);
    const out = new Set<string>();
    const n = this.order.length;
    if (i === undefined || n < 2) return out;
    const { k, r } = this.plan;
    for (let d = 1; d <= k && d < n; d++) {
      out.add(this.order[(i + d) % n]!);
      out.add(this.order[(i - d + n) % n]!);
    }
    for (let j = 1; j <= r; j++) out.add(this.order[(i + Math.floor((j * n) / (r + 1))) % n]!);
    out.delete(name);
    return out;
  }

  /** Whether a connection between `a` and `b` is wanted: either end prefers the other. */
  wanted(a: string, b: string): boolean {
    return this.preferred(a).has(b) || this.preferred(b).has(a);
  }
}
