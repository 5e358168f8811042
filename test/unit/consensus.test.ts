/**
 * Paxos over gossip. The properties deliver the peers' entries in random order, with each
 * peer's view of who is reachable changing at random (so several peers may think they are
 * the lowest and propose at once), and state the invariants of agreement: at no moment do two
 * peers hold different decided values, and once everyone has heard everyone, all have decided
 * the same sorted list of at least a quorum of participants.
 *
 * Equivalent mutants in src/ipam/consensus.ts, which no test can kill (run of 2026-11-28):
 * - cmpBallot `a[0] < b[0]` -> `<=`: guarded by `a[0] !== b[0]`;
 * - `same`: `!!a && !!b` -> `true` or `||`: every call passes a defined ballot on one side, and
 *   cmpBallot(undefined, defined) is never 0;
 * - merge `if (own)` -> `true`: deleting an absent key changes nothing;
 * - the prior value's `cmpBallot(a.b, prior?.b) > 0` -> `>= 0`: two acceptances under one
 *   ballot carry one value (a ballot's proposer accepts one value);
 * - mine()'s `{ observer: this.observer || undefined }`: only non-observers reach it, for
 *   whom it serialises as `{}`;
 * - acceptor `cmpBallot(e.proposal, me.promised) > 0` -> `>= 0`: an equal ballot is written
 *   over itself; `n === this.self` -> `false` in the acceptor loop: a peer's own stored entry
 *   is what `me` was copied from, so neither branch changes it;
 * - the proposer's `n === this.self ||` -> `false`/`!==`, and `if (!includes(self))` -> `true`:
 *   the next line puts this peer into the list in any case, and a second copy of it does not
 *   change which name sorts first.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { runs } from '../helpers/property';
import { cmpBallot, Consensus, type Ballot } from '../../src/ipam/consensus';

const NAMES = ['02:00:00:00:00:01', '02:00:00:00:00:02', '02:00:00:00:00:03', '02:00:00:00:00:04', '02:00:00:00:00:05'];

type Delivery = { from: number; to: number; hidden: number };
const deliveryArb = (n: number): fc.Arbitrary<Delivery> => fc.record({ from: fc.nat(n - 1), to: fc.nat(n - 1), hidden: fc.nat(2 ** n - 1) });

function decidedValues(ps: Consensus[]): string[] {
  return [...new Set(ps.map((p) => p.decided()).filter((v) => v !== undefined).map((v) => JSON.stringify(v)))];
}

test('property: with duelling proposers and any delivery order, no two peers ever decide differently; all end on one value', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 2, max: 5 }).chain((n) => fc.tuple(fc.constant(n), fc.array(deliveryArb(n), { minLength: 40, maxLength: 250 }), fc.nat(n - 1))),
      ([n, deliveries, observers]) => {
        // the last `observers` peers (at most n-2... none when n is small) only watch
        const nObs = Math.min(observers, n - 2 > 0 ? 1 : 0);
        const size = n - nObs;
        const ps = NAMES.slice(0, n).map((name, i) => new Consensus(name, size, i >= n - nObs));
        for (const p of ps) p.step(() => true);
        for (const d of deliveries) {
          if (d.from === d.to) continue;
          // `hidden` is a bitmask of peers the receiver cannot reach right now
          const reach = (name: string) => !(d.hidden & (1 << NAMES.indexOf(name)));
          ps[d.to]!.merge(structuredClone(ps[d.from]!.entries.toData()));
          ps[d.to]!.step(reach);
          assert.ok(decidedValues(ps).length <= 1, `two decisions: ${decidedValues(ps).join(' and ')}`);
        }
        for (let round = 0; round < 8; round++) {
          for (const p of ps) for (const q of ps) if (p !== q) q.merge(structuredClone(p.entries.toData()));
          for (const p of ps) p.step(() => true);
          assert.ok(decidedValues(ps).length <= 1);
        }
        const values = ps.map((p) => p.decided());
        assert.ok(values.every((v) => v !== undefined), 'everyone decided');
        assert.equal(decidedValues(ps).length, 1);
        const v = values[0]!;
        assert.deepEqual(v, [...v].sort(), 'sorted, so every peer builds the same ring');
        assert.ok(v.length >= ps[0]!.quorum, 'at least a quorum');
        const participants = NAMES.slice(0, size);
        assert.ok(v.every((x) => participants.includes(x)), 'observers are never owners');
      },
    ),
    { numRuns: runs(200) },
  );
});

test('property: a minority cut off from the rest never decides on its own', () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.nat(4), fc.nat(4)), { minLength: 20, maxLength: 150 }), (deliveries) => {
      const ps = NAMES.map((name) => new Consensus(name, 5, false));
      const minority = new Set([0, 1]);
      const side = (i: number) => minority.has(i);
      for (const p of ps) p.step(() => true);
      for (const [from, to] of deliveries) {
        if (from === to || side(from) !== side(to)) continue;
        ps[to]!.merge(structuredClone(ps[from]!.entries.toData()));
        ps[to]!.step((name) => side(NAMES.indexOf(name)) === side(to));
      }
      assert.equal(ps[0]!.decided(), undefined);
      assert.equal(ps[1]!.decided(), undefined);
    }),
    { numRuns: runs(200) },
  );
});

test('a peer ignores gossip about its own entry: only it writes that', () => {
  const p = new Consensus(NAMES[0]!, 3, false);
  p.step(() => true);
  const mine = p.entries.get(NAMES[0]!);
  const forged = { [NAMES[0]!]: { proposal: [99, 'zz'] as Ballot, v: Number.MAX_SAFE_INTEGER }, [NAMES[1]!]: { v: 1 } };
  const d = p.merge(forged);
  assert.deepEqual(p.entries.get(NAMES[0]!), mine);
  assert.deepEqual(Object.keys(d ?? {}), [NAMES[1]!]);
});

test('quorum is a strict majority of the size the operator gave', () => {
  assert.deepEqual(
    [1, 2, 3, 4, 5, 6].map((n) => new Consensus('a', n, false).quorum),
    [1, 2, 2, 3, 3, 4],
  );
});

test('ballots order by round, then by proposer; a missing ballot is lowest', () => {
  assert.equal(cmpBallot([1, 'b'], [2, 'a']), -1);
  assert.equal(cmpBallot([2, 'a'], [1, 'b']), 1);
  assert.equal(cmpBallot([1, 'a'], [1, 'b']), -1);
  assert.equal(cmpBallot([1, 'b'], [1, 'a']), 1);
  assert.equal(cmpBallot([1, 'a'], [1, 'a']), 0);
  assert.equal(cmpBallot(undefined, [0, 'a']), -1);
  assert.equal(cmpBallot([0, 'a'], undefined), 1);
  assert.equal(cmpBallot(undefined, undefined), 0);
});

test('known counts reachable participants and this peer, never observers', () => {
  const p = new Consensus(NAMES[0]!, 5, false);
  assert.equal(p.known(() => false), 1, 'itself, before it has an entry');
  p.step(() => true);
  p.merge({ [NAMES[1]!]: { v: 1 }, [NAMES[2]!]: { v: 1 }, [NAMES[3]!]: { observer: true, v: 1 } });
  assert.equal(p.known(() => true), 3);
  assert.equal(p.known((n) => n !== NAMES[2]), 2);
  const o = new Consensus(NAMES[4]!, 5, true);
  assert.equal(o.known(() => true), 0);
  o.merge({ [NAMES[1]!]: { v: 1 } });
  assert.equal(o.known(() => true), 1);
});

test('an observer publishes that it observes, once, and never proposes or accepts', () => {
  const o = new Consensus(NAMES[4]!, 2, true);
  const first = o.step(() => true);
  assert.deepEqual(Object.keys(first ?? {}), [NAMES[4]!]);
  assert.equal(first![NAMES[4]!]!.observer, true);
  assert.equal(o.step(() => true), undefined);
  o.merge({ [NAMES[0]!]: { proposal: [1, NAMES[0]!], accepted: { b: [1, NAMES[0]!], value: [NAMES[0]!, NAMES[1]!] }, v: 5 } });
  assert.equal(o.step(() => true), undefined);
  const e = o.entries.get(NAMES[4]!)!;
  assert.equal(e.accepted, undefined);
  assert.equal(e.promised, undefined);
});

test('a lone participant of consensus=1 decides itself at once; step reports a change only when there is one', () => {
  const p = new Consensus(NAMES[0]!, 1, false);
  assert.ok(p.step(() => true));
  assert.deepEqual(p.decided(), [NAMES[0]]);
  assert.equal(p.step(() => true), undefined, 'nothing new to gossip');
});

const [P1, P2, P3] = NAMES as [string, string, string];

test('a proposer re-proposes the value of the highest ballot its promisers accepted, not one of its own', () => {
  const a = new Consensus(P1, 3, false);
  a.step(() => true); // proposes [1, P1]
  assert.deepEqual(a.entries.get(P1)!.proposal, [1, P1]);
  // both others promised [1, P1]; each accepted a value earlier, P3's under the higher ballot
  a.merge({
    [P2]: { promised: [1, P1], accepted: { b: [0, 'zz'], value: ['x', 'y'] }, v: 1 },
    [P3]: { promised: [1, P1], accepted: { b: [0, 'aa'], value: ['y', 'z'] }, v: 1 },
  });
  a.step(() => true);
  assert.deepEqual(a.entries.get(P1)!.accepted, { b: [1, P1], value: ['x', 'y'] }, 'the highest ballot, wherever it is in the list');
  // with no earlier acceptance it proposes its promisers, sorted
  const fresh = new Consensus(P1, 3, false);
  fresh.step(() => true);
  fresh.merge({ [P3]: { promised: [1, P1], v: 1 } });
  fresh.step(() => true);
  assert.deepEqual(fresh.entries.get(P1)!.accepted, { b: [1, P1], value: [P1, P3] });
});

test('an acceptor keeps its highest promise and never accepts below it', () => {
  const b = new Consensus(P2, 3, false);
  // P1 is there and reachable, so P2 is not the lowest and only acts as an acceptor
  b.merge({ [P1]: { v: 1 }, [P3]: { proposal: [5, P3], v: 1 } });
  b.step(() => true);
  assert.deepEqual(b.entries.get(P2)!.promised, [5, P3]);
  // a lower proposal, accepted by its own proposer, comes later: neither promised nor accepted
  b.merge({ [P1]: { proposal: [1, P1], accepted: { b: [1, P1], value: [P1, P2] }, v: 2 } });
  b.step(() => true);
  assert.deepEqual(b.entries.get(P2)!.promised, [5, P3]);
  assert.equal(b.entries.get(P2)!.accepted, undefined);
  // the higher one, once its proposer accepted it, is accepted
  b.merge({ [P3]: { proposal: [5, P3], accepted: { b: [5, P3], value: [P2, P3] }, v: 2 } });
  b.step(() => true);
  assert.deepEqual(b.entries.get(P2)!.accepted, { b: [5, P3], value: [P2, P3] });
  // and a settled peer has nothing new to say: its state is kept as it is
  const before = JSON.stringify(b.entries.get(P2));
  assert.equal(b.step(() => true), undefined);
  assert.equal(JSON.stringify(b.entries.get(P2)), before);
});

test('a proposal outbids every round seen; the lowest reachable participant proposes, unreachable and observing peers do not count', () => {
  const a = new Consensus(P1, 3, false);
  // a round seen only in another peer's promise counts too
  a.merge({ [P2]: { promised: [7, P3], v: 1 } });
  a.step(() => true);
  assert.deepEqual(a.entries.get(P1)!.proposal, [8, P1], 'one round above the highest seen');
  // P2 is not the lowest, but P1 is out of reach: P2 proposes
  const b = new Consensus(P2, 3, false);
  b.merge({ [P1]: { v: 1 } });
  b.step((n) => n !== P1);
  assert.ok(b.entries.get(P2)!.proposal, 'proposes while the lowest is unreachable');
  const c = new Consensus(P3, 3, false);
  c.merge({ [P1]: { v: 1 } });
  c.step(() => true);
  assert.equal(c.entries.get(P3)!.proposal, undefined, 'leaves it to the reachable lowest');
  // an observer with the lowest name does not stop the lowest participant from proposing
  const d = new Consensus(P2, 2, false);
  d.merge({ [P1]: { observer: true, v: 1 } });
  d.step(() => true);
  assert.ok(d.entries.get(P2)!.proposal);
  // known: this peer counts even when the reachability test says otherwise about it
  d.merge({ [P3]: { v: 1 } });
  assert.equal(d.known((n) => n === P3), 2);
});
