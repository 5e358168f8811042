/**
 * Which peers a router keeps connections to once the mesh is too large for everyone to connect
 * to everyone: a pure function of the peer names, so every router computes the same answer.
 *
 * Why it is this way: up to a size (100 peers by default) the mesh is full, as Weave's was; at
 * 1,000 a full mesh means a million connections and a topology of a million keys on every
 * router. Beyond that size, peers sit on a ring ordered by a hash of their names; each keeps
 * its `k` nearest on either side (the ring stays connected) and fingers a quarter, a
 * sixteenth, ... of the ring further on (`base` 4), so any peer is a few hops away (a small
 * world: 6 hops at most at 1,000 peers in the unit test) with about 2k + 2 log4 N connections
 * per router. A connection is kept when either end prefers the other, so both
 * ends agree on it. Just past the full-mesh size the nearest kept on either side start at half
 * of it and shrink by one for every two peers more, so growing past the limit drops a
 * connection or so per router per join, never most of them at once (Weave-sized meshes of a
 * hundred or two used to fall over at that step).
 */

/** Places on the ring by name, remembered (rings are rebuilt as peers come and go). */
const places = new Map<string, number>();

/** A peer's place on the ring: a 32-bit hash of its name, remembered. */
export function ringPlace(name: string): number {
  let h = places.get(name);
  if (h === undefined) {
    if (places.size > 100_000) places.clear();
    places.set(name, (h = fnv(name)));
  }
  return h;
}

function fnv(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  // spread similar names (MACs differ in a byte or two) evenly round the ring
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export interface NeighbourPlan {
  /** Nearest peers kept on either side of the ring, at least. */
  k: number;
  /** Fingers at distances base, base^2, ... (2 or more). */
  base: number;
  /** Up to this many peers every router connects to every other. */
  fullMeshUpTo: number;
}

export const DEFAULT_PLAN: NeighbourPlan = { k: 2, base: 4, fullMeshUpTo: 100 };

/** The peers ordered around the ring (by hash, then name). */
export class NeighbourRing {
  private readonly order: string[];
  /** Each peer's place on the ring (a 32-bit hash), in order. */
  private readonly points: number[];
  private readonly index = new Map<string, number>();
  private readonly cache = new Map<string, Set<string>>();
  /** Nearest peers kept on either side at this size. */
  readonly near: number;
  /** The mesh size planned for. */
  readonly planned: number;

  constructor(
    names: Iterable<string>,
    private readonly plan: NeighbourPlan = DEFAULT_PLAN,
    /** The mesh size to plan for, when more peers are expected than named (default: those named). */
    expected = 0,
  ) {
    const placed = [...new Set(names)].map((n) => [ringPlace(n), n] as const).sort((a, b) => a[0] - b[0] || (a[1] < b[1] ? -1 : 1));
    this.order = placed.map(([, n]) => n);
    this.points = placed.map(([h]) => h);
    this.order.forEach((n, i) => this.index.set(n, i));
    const n = Math.max(this.order.length, expected);
    this.planned = n;
    // a full mesh up to the limit, then fewer nearest peers by one per two peers more
    this.near = n <= plan.fullMeshUpTo ? n : Math.max(plan.k, Math.floor((2 * plan.fullMeshUpTo - n) / 2));
  }

  get size(): number {
    return this.order.length;
  }

  /** Whether every peer is to connect to every other at this size. */
  get full(): boolean {
    return this.planned <= this.plan.fullMeshUpTo;
  }

  /** The peers `name` prefers (empty when it is not on the ring). */
  preferred(name: string): ReadonlySet<string> {
    let out = this.cache.get(name);
    if (out) return out;
    out = new Set<string>();
    const i = this.index.get(name);
    const n = this.order.length;
    if (i !== undefined && n >= 2) {
      for (let d = 1; d <= this.near && d < n; d++) {
        out.add(this.order[(i + d) % n]!);
        out.add(this.order[(i - d + n) % n]!);
      }
      // fingers: the first peer at or after 1/base, 1/base^2, ... of the ring further on; by
      // place on the ring, not by count, so a join moves only the fingers it lands before
      for (let f = this.plan.base; f < n; f *= this.plan.base) out.add(this.order[this.successor((this.points[i]! + Math.floor(2 ** 32 / f)) % 2 ** 32)]!);
      out.delete(name);
    }
    this.cache.set(name, out);
    return out;
  }

  /**
   * The peers `name` keeps connections to under the plan: those it prefers and those that
   * prefer it (the fingers landing on it, found by place, not by asking every peer).
   */
  neighbours(name: string): Set<string> {
    const out = new Set(this.preferred(name));
    const i = this.index.get(name);
    const n = this.order.length;
    if (i === undefined || n < 2) return out;
    const H = 2 ** 32;
    // a peer at p fingers `name` when the first peer at or after p + H/f is `name`: p + H/f
    // lies after the place of the peer before `name` and no later than that of `name`
    const before = this.points[(i - 1 + n) % n]!;
    for (let f = this.plan.base; f < n; f *= this.plan.base) {
      const step = Math.floor(H / f);
      const lo: number = (((before - step) % H) + H) % H;
      const hi: number = (((this.points[i]! - step) % H) + H) % H;
      if (before === this.points[i]) continue;
      for (const j of this.arc(lo, hi) as number[]) if (j !== i) out.add(this.order[j]!);
    }
    return out;
  }

  /** Indices of the peers placed in the arc (lo, hi], going round the ring. */
  private arc(lo: number, hi: number): number[] {
    const out: number[] = [];
    const n = this.points.length;
    let j = this.successor(lo);
    if (this.points[j] === lo) {
      // skip those exactly at lo (the arc is open there)
      let k = 0;
      while (k < n && this.points[j] === lo) {
        j = (j + 1) % n;
        k++;
      }
    }
    const wraps = hi < lo;
    for (let k = 0; k < n; k++, j = (j + 1) % n) {
      const p = this.points[j]!;
      const inside = wraps ? p > lo || p <= hi : p > lo && p <= hi;
      if (!inside) break;
      out.push(j);
    }
    return out;
  }

  /** The index of the first peer at or after `point` on the ring (wrapping round). */
  private successor(point: number): number {
    let lo = 0;
    let hi = this.points.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.points[mid]! < point) lo = mid + 1;
      else hi = mid;
    }
    return lo % this.points.length;
  }

  /** Whether a connection between `a` and `b` is wanted: either end prefers the other. */
  wanted(a: string, b: string): boolean {
    return this.full || this.preferred(a).has(b) || this.preferred(b).has(a);
  }
}
