/**
 * How the IPAM ring starts in a cluster (Weave's `consensus=N` over the Node count), and the
 * rule that keeps a late joiner from starting a ring of its own.
 *
 * Why it is this way: on a cluster's first start nobody owns the range, and the routers agree
 * on the first owners by consensus among the N Nodes the API lists (a quorum of N/2+1). A router
 * that starts later may see the API list only itself (a new Node in a cluster of one, a stale
 * cache) and, with consensus=1, would split the range on its own. The peer record
 * (record.ts) says whether a ring already exists: every router whose ring is initialised marks
 * it there (`ring`), and a router that finds the mark starts as an observer and takes the ring
 * from its peers by gossip. Registrations alone would not do: on a first start the routers
 * come up one after another, and all but the first would then wait as observers for a
 * consensus that needs their votes. A mark with no other router left in the record (all were
 * reclaimed: the ring went with them) counts as no ring.
 */
import type { IpamInit } from '../ipam/service';
import type { PeerRecord } from './record';
import type { KubeObject } from '../common/kube-object';

export interface BootstrapDecision {
  init: IpamInit;
  reason: string;
}

/**
 * `nodes`: the Nodes the API lists now (after the first list); `record`: the peer record.
 * Only for a router without a ring of its own in its state (one that has one ignores the mode).
 */
export function ipamInitFromCluster(o: { self: string; nodes: readonly KubeObject[]; record: PeerRecord }): BootstrapDecision {
  const ring = o.record.ring;
  const holders = Object.entries(o.record.peers).filter(([p, e]) => p !== o.self && e.supersededBy === undefined).length;
  if (ring && ring.by !== o.self && holders > 0) {
    return { init: { mode: 'observer' }, reason: `the cluster has a ring (marked by ${ring.by} at ${ring.at}); joining it` };
  }
  const n = Math.max(1, o.nodes.length);
  return { init: { mode: 'consensus', size: n }, reason: `first start of the cluster: consensus over ${n} node${n === 1 ? '' : 's'}` };
}
