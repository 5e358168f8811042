/**
 * Integer intervals and boxes (one interval per dimension), for the kernel's interval sets.
 *
 * nftables' concatenated interval sets (pipapo) refuse an element whose start or end falls
 * inside another element, so what policies allow is turned into disjoint boxes first: their
 * union is the same set of points, and none overlaps another.
 */
import { lastOf, type Cidr } from '../common/ip';

/** Inclusive [lo, hi]. */
export type Interval = readonly [number, number];
/** One interval per dimension. */
export type Box = readonly Interval[];

/** Sorts and merges overlapping or adjacent intervals. */
export function mergeIntervals(xs: readonly Interval[]): Interval[] {
  const s = [...xs].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const out: [number, number][] = [];
  for (const [lo, hi] of s) {
    const last = out[out.length - 1];
    if (last && lo <= last[1] + 1) last[1] = Math.max(last[1], hi);
    else out.push([lo, hi]);
  }
  return out;
}

/** The addresses of `cidr` outside every `except`, as sorted disjoint intervals. */
export function cidrMinus(cidr: Cidr, except: readonly Cidr[]): Interval[] {
  const holes = mergeIntervals(except.map((c) => [c.base, lastOf(c)] as const));
  const out: Interval[] = [];
  let next = cidr.base;
  const end = lastOf(cidr);
  for (const [lo, hi] of holes) {
    if (hi < next || lo > end) continue;
    if (lo > next) out.push([next, lo - 1]);
    next = Math.max(next, hi + 1);
  }
  if (next <= end) out.push([next, end]);
  return out;
}

/**
 * Disjoint boxes covering exactly the union of `boxes` (all of one dimensionality). Sweeps the
 * first dimension over its breakpoints, covers each slab's active boxes recursively in the other
 * dimensions, and joins neighbouring slabs whose covers are equal, so the output stays small.
 */
export function disjointCover(boxes: readonly Box[]): Box[] {
  if (boxes.length === 0) return [];
  if (boxes[0]!.length === 1) return mergeIntervals(boxes.map((b) => b[0]!)).map((i) => [i]);
  const points = new Set<number>();
  for (const b of boxes) {
    points.add(b[0]![0]);
    points.add(b[0]![1] + 1);
  }
  const cuts = [...points].sort((a, b) => a - b);
  const byStart = [...boxes].sort((a, b) => a[0]![0] - b[0]![0]);
  const out: Box[] = [];
  let active: Box[] = [];
  let k = 0;
  let run: { lo: number; hi: number; rest: Box[]; key: string } | undefined;
  const flush = () => {
    if (run) for (const r of run.rest) out.push([[run.lo, run.hi], ...r]);
    run = undefined;
  };
  for (let i = 0; i < cuts.length - 1; i++) {
    const lo = cuts[i]!;
    const hi = cuts[i + 1]! - 1;
    while (k < byStart.length && byStart[k]![0]![0] <= lo) active.push(byStart[k++]!);
    active = active.filter((b) => b[0]![1] >= lo);
    if (active.length === 0) {
      flush();
      continue;
    }
    const rest = disjointCover(active.map((b) => b.slice(1)));
    const key = JSON.stringify(rest);
    if (run && run.hi + 1 === lo && run.key === key) run.hi = hi;
    else {
      flush();
      run = { lo, hi, rest, key };
    }
  }
  flush();
  return out;
}
