/**
 * Paxos over gossip. The properties deliver the peers' entries in random order, with each
 * peer's view of who is reachable changing at random (so several peers may think they are
 * the lowest and propose at once), and state the invariants of agreement: at no moment do two
 * peers hold different decided values, and once everyone has heard everyone, all have decided
 * the same sorted list of at least a quorum of participants.
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
