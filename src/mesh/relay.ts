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

/**
 * The relay rule by writer, for a change written by `origin` and held by `self`:
 * - nothing to `origin`, nor to a neighbour of `origin` (it sent the change there itself; a
 *   connection newer than the change brought both ends level by their digests);
 * - from a neighbour of `origin`, to a router two hops from it, only when `self` is the one
 *   of their common neighbours the pair designates (`designation`), so that router gets one
 *   copy instead of one from every common neighbour (in a forming full mesh, dozens);
 * - further out, by the sender (`relayRule`), and never to a router two hops from `origin`
 *   (its designated relayer covers it).
 * Routers that see the topology differently may both send or both hold back; the digests
 * exchanged on new connections and every refresh bring what was missed.
 *
 * What came in answer to this router's digest (`answered`) was news here but may be old
 * elsewhere: it goes to every neighbour that `origin` did not reach itself.
 */
export function relayByWriter(self: string, from: string, to: string, origin: string, adjacent: (a: string, b: string) => boolean, designation: (origin: string, to: string) => Designation, conns: (peer: string) => ReadonlySet<string> | undefined, answered = false): boolean {
  if (to === origin || adjacent(origin, to)) return false;
  if (answered) return true;
  const d = designation(origin, to);
  if (from === origin || adjacent(self, origin)) return d === 'self';
  return d === 'none' && relayRule(from, to, conns);
}

/** Who passes a change of `origin` on to `to`, as one router sees it (see `designation`). */
export type Designation = 'self' | 'other' | 'none';

/**
 * Of the routers next to both `origin` and `to` (looked for among `candidates`), the one that
 * passes origin's changes on to `to` is the lowest by a hash of it with the pair, so the work
 * spreads over the mesh: 'self' when that is `self`, 'other' when it is another, 'none' when
 * they have no common neighbour. Stops at the first common neighbour ranked below `self`.
 */
export function designation(self: string, origin: string, to: string, candidates: Iterable<string>, adjacent: (a: string, b: string) => boolean): Designation {
  const pair = ringPlace(origin) ^ ringPlace(to);
  const mine = adjacent(self, origin) && adjacent(self, to) ? (ringPlace(self) ^ pair) >>> 0 : -1;
  for (const c of candidates) {
    if (c === origin || c === to || c === self || !adjacent(origin, c) || !adjacent(c, to)) continue;
    if (mine < 0) return 'other';
    const rank = (ringPlace(c) ^ pair) >>> 0;
    if (rank < mine || (rank === mine && c < self)) return 'other';
  }
  return mine >= 0 ? 'self' : 'none';
}
