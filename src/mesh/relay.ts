/**
 * Which neighbours a router passes gossip on to: by the sender of what it got, or, where the
 * channel names each key's writer (the topology), by writer. Pure functions of what one router
 * sees of the topology; the topology (topology.ts) answers them for its own view.
 */
import { ringPlace } from './neighbours';

/**
 * The relay rule by sender: a router passes on to `to` what `from` sent it unless `from`
 * reports a connection to `to` (then `from` reached `to` itself). Sound whoever wrote it: the
 * originator sends to all its neighbours, and each relay to all of its own but its sender's.
 */
export function relayRule(from: string, to: string, conns: (peer: string) => ReadonlySet<string> | undefined): boolean {
  return !conns(from)?.has(to);
}

/** What one router sees of the mesh, as the relay rules read it. */
export interface RelayView {
  /** The router deciding. */
  readonly self: string;
  /** The connections `p` reports (its own edges). */
  conns(p: string): ReadonlySet<string> | undefined;
  /** Whether either of `a` and `b` reports a connection to the other. */
  adjacent(a: string, b: string): boolean;
  /** Every peer adjacent to `p`, as `adjacent` sees it. */
  around(p: string): Iterable<string>;
  /** About how many peers are adjacent to `p` (which side of a pair to look around). */
  degree(p: string): number;
}

/**
 * Which of `neighbours` get what came from `from` (written by `origin`, when the channel names
 * writers; `answered`: it came in answer to this router's digest). By sender without an origin
 * (`relayRule`). By writer with one:
 * - nothing to `origin`, nor to a neighbour `origin` reports (it sent the change there itself;
 *   a connection newer than the change gets it from the writer's recent keys, see
 *   Topology.ownSince, or the digests). A router that alone reports a connection to `origin`
 *   is not skipped: the writer may have just left it, and the change may say so;
 * - from a neighbour of `origin`, to a router two hops from it, only when `self` is the one
 *   of their common neighbours the pair designates: the lowest by a hash of it with the pair,
 *   so the work spreads and that router gets one copy instead of one from every common
 *   neighbour (in a forming full mesh, dozens);
 * - further out, by the sender, and never to a router two hops from `origin` (its designated
 *   relayer covers it);
 * - what came in answer to a digest was news here but may be old elsewhere: it goes to every
 *   neighbour that `origin` does not reach itself.
 * Routers that see the topology differently may both send or both hold back; the digests
 * exchanged on new connections and every refresh bring what was missed.
 *
 * Decided once per writer for all neighbours: the writer's neighbours are the candidates for
 * every pair, and only those ranked below `self` are looked up (in a forming mesh of a few
 * hundred, deciding per writer and neighbour was a fifth of the CPU).
 */
export function relayTargets(v: RelayView, from: string, origin: string | undefined, answered: boolean, neighbours: Iterable<string>): string[] {
  const out: string[] = [];
  if (origin === undefined) {
    for (const t of neighbours) if (t !== from && (answered || relayRule(from, t, (p) => v.conns(p)))) out.push(t);
    return out;
  }
  const self = v.self;
  const o = ringPlace(origin);
  const nextToOrigin = v.adjacent(self, origin);
  const fromWriterSide = from === origin || nextToOrigin;
  // the writer's other neighbours, with the part of their rank that does not depend on `to`
  const cands: string[] = [];
  const base: number[] = [];
  if (!answered && fromWriterSide) {
    for (const c of v.around(origin)) {
      if (c === self) continue;
      cands.push(c);
      base.push(ringPlace(c) ^ o);
    }
  }
  const selfBase = ringPlace(self) ^ o;
  const conns = (p: string) => v.conns(p);
  for (const to of neighbours) {
    // the writer reached the neighbours it reports itself; one that only claims the writer may
    // be one the writer has just left (its entry not yet updated), and this change may be the
    // writer saying so: it is not skipped, and gets its copy from the designated relay below
    if (to === from || to === origin || v.conns(origin)?.has(to)) continue;
    if (answered) {
      out.push(to);
      continue;
    }
    if (fromWriterSide) {
      // to `to` when this router is the designated one: next to both, and no common neighbour ranked below it
      if (!nextToOrigin || !v.adjacent(self, to)) continue;
      const t = ringPlace(to);
      const mine = (selfBase ^ t) >>> 0;
      let lowest = true;
      for (let i = 0; i < cands.length && lowest; i++) {
        const c = cands[i]!;
        if (c === to) continue;
        const rank = (base[i]! ^ t) >>> 0;
        if (rank > mine || (rank === mine && c > self)) continue;
        if (v.adjacent(c, to)) lowest = false;
      }
      if (lowest) out.push(to);
    } else if (relayRule(from, to, conns) && !twoHops(v, origin, to)) out.push(to);
  }
  return out;
}

/** Whether `a` and `b` have a neighbour in common (looked for around the one with fewer). */
function twoHops(v: RelayView, a: string, b: string): boolean {
  const [x, y] = v.degree(a) <= v.degree(b) ? [a, b] : [b, a];
  for (const c of v.around(x)) if (c !== y && v.adjacent(c, y)) return true;
  return false;
}
