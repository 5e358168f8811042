/**
 * The versioned map every gossip channel is built from. The properties merge long histories
 * (tens of deltas over tens of keys, with many equal versions so that ties are common) and
 * state what must hold of the result: whatever the order, and however often a delta arrives,
 * every replica ends with the same entry per key, the one with the highest version.
 *
 * Equivalent mutants in `wins` (src/common/crdt.ts), which no test can kill (run of 2026-11-28):
 * - `a.v > b.v` -> `a.v >= b.v`: guarded by `a.v !== b.v`, so equality never reaches it;
 * - `sa !== sb && sa > sb` -> `true && sa > sb`, and `sa > sb` -> `sa >= sb`: equal strings
 *   are never greater, and `sa !== sb` already excludes them.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { runs } from '../helpers/property';
import { canonical, combine, sameValue, VersionedMap, wins, type MapData, type Versioned } from '../../src/common/crdt';

type V = { owner: string };
type Data = MapData<V>;

const KEYS = Array.from({ length: 24 }, (_, i) => `k${i}`);
// few versions and few owners: equal versions with different values (ties) are frequent
const entryArb: fc.Arbitrary<Versioned<V>> = fc.record({ owner: fc.constantFrom('a', 'b', 'c', 'd'), v: fc.integer({ min: 1, max: 4 }) });
const deltaArb: fc.Arbitrary<Data> = fc.dictionary(fc.constantFrom(...KEYS), entryArb, { maxKeys: KEYS.length });
/** A history: many deltas, and a permutation of them. */
const historyArb = fc
  .array(deltaArb, { minLength: 20, maxLength: 60 })
  .chain((ds) => fc.tuple(fc.constant(ds), fc.shuffledSubarray(ds.map((_, i) => i), { minLength: ds.length, maxLength: ds.length })));

const replay = (ds: Data[], m = new VersionedMap<V>()) => {
  for (const d of ds) m.merge(structuredClone(d));
  return m;
};
const canon = (d: Data) => JSON.stringify(Object.keys(d).sort().map((k) => [k, d[k]]));

/** The expected winner of a key, computed without the map: highest version, then the larger serialisation. */
function expected(ds: Data[]): Data {
  const out: Data = {};
  for (const d of ds) {
    for (const [k, e] of Object.entries(d)) {
      const cur = out[k];
      if (!cur || e.v > cur.v || (e.v === cur.v && JSON.stringify(e) > JSON.stringify(cur))) out[k] = e;
    }
  }
  return out;
}

test('property: a long history merges to the same state in any order, the highest version of each key', () => {
  fc.assert(
    fc.property(historyArb, ([ds, order]) => {
      const inOrder = replay(ds).toData();
      const shuffled = replay(order.map((i) => ds[i]!)).toData();
      assert.equal(canon(shuffled), canon(inOrder));
      assert.equal(canon(inOrder), canon(expected(ds)));
    }),
    { numRuns: runs(150) },
  );
});

test('property: merging is idempotent; a second delivery of anything changes nothing and reports no delta', () => {
  fc.assert(
    fc.property(historyArb, ([ds, order]) => {
      const m = replay(ds);
      const before = canon(m.toData());
      for (const i of order) assert.equal(m.merge(structuredClone(ds[i]!)), undefined, 'a repeated delta is no change');
      assert.equal(m.merge(m.toData()), undefined, 'its own state is no change');
      assert.equal(canon(m.toData()), before);
    }),
    { numRuns: runs(100) },
  );
});

test('property: the delta merge returns is exactly what changed, and passing it on brings a replica level', () => {
  fc.assert(
    fc.property(historyArb, fc.integer({ min: 1, max: 19 }), ([ds], cut) => {
      const here = replay(ds.slice(0, cut));
      const there = replay(ds.slice(0, cut));
      const before = here.toData();
      const rest = replay(ds.slice(cut)).toData();
      const delta = here.merge(structuredClone(rest)) ?? {};
      const after = here.toData();
      for (const k of KEYS) {
        const changed = JSON.stringify(before[k]) !== JSON.stringify(after[k]);
        assert.equal(k in delta, changed, `key ${k} in the delta iff it changed`);
        if (changed) assert.deepEqual(delta[k], after[k]);
      }
      there.merge(structuredClone(delta));
      assert.equal(canon(there.toData()), canon(after));
    }),
    { numRuns: runs(100) },
  );
});

test('property: combine batches two deltas into one that merges like both, whatever their order', () => {
  fc.assert(
    fc.property(deltaArb, deltaArb, deltaArb, (base, a, b) => {
      const ab = combine(a, b);
      assert.equal(canon(ab), canon(combine(b, a)), 'commutative');
      assert.equal(canon(ab), canon(expected([a, b])), 'the higher version of each key');
      assert.equal(canon(combine(a, a)), canon(a), 'idempotent');
      const viaBatch = replay([base, ab]).toData();
      const oneByOne = replay([base, a, b]).toData();
      assert.equal(canon(viaBatch), canon(oneByOne));
    }),
    { numRuns: runs(300) },
  );
});

test('combine keeps the higher version from either side and leaves its inputs alone', () => {
  const a: Data = { x: { owner: 'a', v: 5 }, y: { owner: 'a', v: 1 } };
  const b: Data = { x: { owner: 'b', v: 2 }, y: { owner: 'b', v: 3 }, z: { owner: 'b', v: 1 } };
  const before = JSON.stringify([a, b]);
  const c = combine(a, b);
  assert.deepEqual(c, { x: { owner: 'a', v: 5 }, y: { owner: 'b', v: 3 }, z: { owner: 'b', v: 1 } });
  assert.equal(JSON.stringify([a, b]), before);
});

test('wins: a higher version wins, a lower loses, an equal one is settled by the value, and the same entry never replaces itself', () => {
  const e = (owner: string, v: number) => ({ owner, v });
  assert.equal(wins(e('a', 1), undefined), true);
  assert.equal(wins(e('a', 2), e('b', 1)), true);
  assert.equal(wins(e('b', 1), e('a', 2)), false);
  assert.equal(wins(e('b', 3), e('a', 3)), true);
  assert.equal(wins(e('a', 3), e('b', 3)), false);
  assert.equal(wins(e('a', 3), e('a', 3)), false);
});

test('set writes a version above any seen for the key and no lower than the clock; put and delete write as told', () => {
  const m = new VersionedMap<V>();
  const t0 = Date.now();
  const first = m.set('k', { owner: 'a' });
  assert.ok(first.v >= t0, 'a fresh key gets the clock, so a restarted writer outranks its old entries');
  assert.equal(first.owner, 'a');
  const future = Date.now() + 10_000_000;
  m.put('k', { owner: 'x', v: future });
  assert.deepEqual(m.get('k'), { owner: 'x', v: future });
  const next = m.set('k', { owner: 'b' });
  assert.equal(next.v, future + 1, 'one above the highest seen');
  assert.deepEqual(m.get('k'), next);
  m.put('j', { owner: 'c', v: 1 });
  assert.deepEqual(m.keys().sort(), ['j', 'k']);
  assert.equal(m.size, 2);
  assert.deepEqual(m.values().map((x) => x.owner).sort(), ['b', 'c']);
  m.delete('k');
  assert.equal(m.get('k'), undefined);
  assert.deepEqual(m.toData(), { j: { owner: 'c', v: 1 } });
});

test('property: sameValue agrees with comparing canonical forms, whatever the key order', () => {
  const json = fc.jsonValue({ maxDepth: 3 });
  const reorder = (x: unknown): unknown => {
    if (x === null || typeof x !== 'object') return x;
    if (Array.isArray(x)) return x.map(reorder);
    return Object.fromEntries(Object.entries(x).reverse().map(([k, v]) => [k, reorder(v)]));
  };
  fc.assert(
    fc.property(json, json, (a, b) => {
      assert.equal(sameValue(a, b), canonical(a) === canonical(b));
      assert.ok(sameValue(a, reorder(a)), 'the same value with keys in another order');
      // a key holding undefined is absent to both
      if (a !== null && typeof a === 'object' && !Array.isArray(a)) {
        let absent = 'zz';
        while (absent in a) absent += 'z';
        assert.ok(sameValue({ ...a, [absent]: undefined }, a));
      }
    }),
    { numRuns: runs(500) },
  );
  assert.equal(sameValue({ v: 1, x: [1, 2] }, { v: 1, x: [2, 1] }), false);
  assert.equal(sameValue({ v: 1 }, { v: 1, x: 0 }), false);
  assert.equal(sameValue([1], { 0: 1 }), false);
});

test('a tombstone written again goes quiet on its new version, not the old one', (t) => {
  t.mock.timers.enable({ apis: ['Date'], now: 1_000_000 });
  const m = new VersionedMap<{ up: boolean }>({ tombstone: (e) => !e.up, afterMs: 60_000 });
  const other = new VersionedMap<{ up: boolean }>();
  m.put('k', { up: false, v: Date.now() });
  t.mock.timers.tick(10_000);
  m.put('k', { up: true, v: Date.now() });
  t.mock.timers.tick(10_000);
  const second = { up: false, v: Date.now() };
  m.put('k', second);
  other.put('k', second);
  t.mock.timers.tick(40_001);
  // the first tombstone would be due now: the second is not
  assert.deepEqual(m.digest(64), other.digest(64));
  assert.equal(m.isQuiet('k'), false);
  assert.equal(m.digestSize, 1);
  t.mock.timers.tick(20_000);
  assert.equal(m.isQuiet('k'), false, 'settled only when the digest is read');
  assert.equal(m.digestSize, 0);
  assert.equal(m.isQuiet('k'), true);
  assert.deepEqual(m.toData(), {});
});

test('a tombstone rewritten many times is queued once and goes quiet on its last version', (t) => {
  t.mock.timers.enable({ apis: ['Date'], now: 1_000_000 });
  const m = new VersionedMap<{ up: boolean }>({ tombstone: (e) => !e.up, afterMs: 60_000 });
  for (let i = 0; i < 50; i++) {
    m.put('k', { up: false, v: Date.now() });
    m.put(`other${i}`, { up: false, v: Date.now() });
    t.mock.timers.tick(1_000);
  }
  // 51 keys loud, one heap entry each, not one per write
  assert.equal(m.queuedTombstones, 51);
  // 70.5 s after the first writes: the first 11 others are due; k, first written as long ago
  // but last 21.5 s ago, is not
  t.mock.timers.tick(20_500);
  assert.equal(m.digestSize, 40);
  assert.equal(m.isQuiet('k'), false);
  assert.equal(m.isQuiet('other0'), true);
  assert.equal(m.queuedTombstones, 40, 'k is queued again at its new time, once');
  t.mock.timers.tick(50_000);
  assert.equal(m.digestSize, 0);
  assert.equal(m.isQuiet('k'), true);
  assert.equal(m.queuedTombstones, 0);
});
