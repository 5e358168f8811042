/**
 * Agreement on the first owners of the ring (`--ipalloc-init consensus=N`): single-decree
 * Paxos whose messages are the peers' own entries in a gossip channel.
 *
 * Why it is this way: gossip already carries each peer's state to every other, so a peer's
 * Paxos role is just what it publishes: the highest ballot it promised, the ballot and value it
 * accepted, and the ballot it proposes. A value is decided once a quorum (N/2+1 of the N the
 * operator named) accepted the same ballot; every peer that sees this builds the same ring
 * from the value (the sorted list of the proposer's quorum), so no further agreement is needed.
 * Only the lowest-named reachable participant proposes, which avoids duelling proposers in
 * the common case; Paxos keeps it safe in the rest.
 */
import { VersionedMap, type MapData } from '../common/crdt';

/** [round, proposer]: ordered by round, then name. */
export type Ballot = [number, string];

export interface PaxosEntry {
  promised?: Ballot;
  accepted?: { b: Ballot; value: string[] };
  proposal?: Ballot;
  /** Observers take no part; they are listed so proposers do not wait for them. */
  observer?: boolean;
  /** The N this participant was told (consensus=N): quorums use the largest N any participant has. */
  size?: number;
}

export function cmpBallot(a: Ballot | undefined, b: Ballot | undefined): number {
  if (!a) return b ? -1 : 0;
  if (!b) return 1;
  if (a[0] !== b[0]) return a[0] < b[0] ? -1 : 1;
  return a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0;
}

const same = (a: Ballot | undefined, b: Ballot | undefined) => !!a && !!b && cmpBallot(a, b) === 0;

export class Consensus {
  readonly entries = new VersionedMap<PaxosEntry>();

  constructor(
    readonly self: string,
    /** How many peers the operator said take part (N of consensus=N). */
    readonly size: number,
    readonly observer: boolean,
  ) {}

  /**
   * N/2+1 of the largest N any participant was told: routers that counted the cluster at
   * different moments (Kubernetes Nodes coming up) still need quorums that intersect.
   */
  get quorum(): number {
    let n = this.size;
    for (const e of this.entries.values()) if (!e.observer && typeof e.size === 'number' && e.size > n) n = e.size;
    return Math.floor(n / 2) + 1;
  }

  private mine(): PaxosEntry {
    const e = this.entries.get(this.self);
    const size = this.observer ? undefined : this.size;
    return e ? { promised: e.promised, accepted: e.accepted, proposal: e.proposal, observer: e.observer, size } : { observer: this.observer || undefined, size };
  }

  merge(data: MapData<PaxosEntry>): MapData<PaxosEntry> | undefined {
    const own = data[this.self];
    if (own) delete data[this.self];
    return this.entries.merge(data);
  }

  /** The decided value, once a quorum accepted one ballot. */
  decided(): string[] | undefined {
    const count = new Map<string, { n: number; value: string[] }>();
    for (const e of this.entries.values()) {
      if (!e.accepted) continue;
      const k = JSON.stringify(e.accepted.b);
      const c = count.get(k) ?? { n: 0, value: e.accepted.value };
      c.n++;
      count.set(k, c);
    }
    for (const c of count.values()) if (c.n >= this.quorum) return c.value;
    return undefined;
  }

  /** Participants known (this peer included), for status: "awaiting consensus (2 of quorum 3)". */
  known(reachable: (p: string) => boolean): number {
    const n = this.entries.keys().filter((k) => !this.entries.get(k)!.observer && (k === this.self || reachable(k))).length;
    return n || (this.observer ? 0 : 1);
  }

  /**
   * One step of this peer's roles; returns its new entry when it changed (to gossip), else
   * undefined. `reachable` says which peers the mesh reaches now.
   */
  step(reachable: (p: string) => boolean): MapData<PaxosEntry> | undefined {
    if (this.observer) {
      if (!this.entries.get(this.self)) return { [this.self]: this.entries.set(this.self, { observer: true }) };
      return undefined;
    }
    const me = this.mine();
    const before = JSON.stringify(me);
    const names = this.entries.keys();
    // acceptor: promise to higher ballots, accept what their proposers accepted themselves
    for (const n of names) {
      if (n === this.self) continue;
      const e = this.entries.get(n)!;
      if (e.proposal && cmpBallot(e.proposal, me.promised) > 0) me.promised = e.proposal;
      if (e.proposal && e.accepted && same(e.accepted.b, e.proposal) && cmpBallot(e.proposal, me.promised) >= 0 && !same(me.accepted?.b, e.proposal)) {
        me.accepted = { b: e.proposal, value: e.accepted.value };
        me.promised = e.proposal;
      }
    }
    // proposer: only the lowest-named reachable participant
    const participants = names.filter((n) => n === this.self || (reachable(n) && !this.entries.get(n)!.observer));
    if (!participants.includes(this.self)) participants.push(this.self);
    const lowest = participants.sort()[0] === this.self;
    if (lowest && !this.decided()) {
      if (!me.proposal || cmpBallot(me.promised, me.proposal) > 0) {
        const maxRound = Math.max(0, ...this.entries.values().flatMap((e) => [e.promised?.[0] ?? 0, e.proposal?.[0] ?? 0]), me.promised?.[0] ?? 0);
        me.proposal = [maxRound + 1, this.self];
        me.promised = me.proposal;
      }
      const promisers = names.filter((n) => n !== this.self && same(this.entries.get(n)!.promised, me.proposal));
      promisers.push(this.self);
      if (promisers.length >= this.quorum && !same(me.accepted?.b, me.proposal)) {
        // Paxos: a value some promiser already accepted must be proposed again
        let prior: { b: Ballot; value: string[] } | undefined;
        for (const n of promisers) {
          const a = n === this.self ? me.accepted : this.entries.get(n)!.accepted;
          if (a && cmpBallot(a.b, prior?.b) > 0) prior = a;
        }
        me.accepted = { b: me.proposal!, value: prior?.value ?? [...promisers].sort() };
      }
    }
    if (JSON.stringify(me) === before && this.entries.get(this.self)) return undefined;
    return { [this.self]: this.entries.set(this.self, me) };
  }
}
