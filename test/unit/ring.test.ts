import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { largestFreeBlock, Ring, RingConflictError, spanToCidrs } from '../../src/ipam/ring';
import { Consensus } from '../../src/ipam/consensus';
import { formatCidr, parseCidr, parseIPv4, sizeOf } from '../../src/common/ip';

const range = parseCidr('10.32.0.0/12')!;
const A = '02:00:00:00:00:0a';
const B = '02:00:00:00:00:0b';
const C = '02:00:00:00:00:0c';


test('spans split into aligned CIDRs that cover them exactly', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 2 ** 20 }), fc.integer({ min: 0, max: 2 ** 20 }), (a, len) => {
      const first = parseIPv4('10.32.0.0')! + a;
      const last = first + len;
      const cs = spanToCidrs(first, last);
      let at = first;
      for (const c of cs) {
        if (c.base !== at || c.base % sizeOf(c) !== 0) return false;
        at += sizeOf(c);
      }
      return at === last + 1;
    }),
  );
});

test('a lone peer owns the range; giving the upper half follows the seeds (10.40.0.0/13)', () => {
  const r = new Ring(range);
  r.initFrom([A]);
  assert.deepEqual(r.ownedBy(A).map(formatCidr), ['10.32.0.0/12']);
  const block = largestFreeBlock(r.ownedBy(A), []);
  assert.equal(formatCidr(block!), '10.32.0.0/12');
  const upper = { base: block!.base + sizeOf(block!) / 2, prefix: 13 };
  const delta = r.give(A, B, upper);
  assert.deepEqual(r.ownedBy(B).map(formatCidr), ['10.40.0.0/13']);
  const other = new Ring(range);
  other.initFrom([A]);
  assert.deepEqual(other.ownedBy(A).map(formatCidr), ['10.32.0.0/12'], 'read before the merge (spans are kept between changes)');
  other.merge(delta);
  assert.deepEqual(other.spans(), r.spans());
  assert.deepEqual(other.ownedBy(B).map(formatCidr), ['10.40.0.0/13']);
});

test('largest free block avoids used addresses and prefers the upper end', () => {
  const used = [parseIPv4('10.32.0.1')!];
  assert.equal(formatCidr(largestFreeBlock([range], used)!), '10.40.0.0/13');
  assert.equal(largestFreeBlock([parseCidr('10.32.0.0/31')!], [parseIPv4('10.32.0.0')!, parseIPv4('10.32.0.1')!]), undefined);
});

test('rings from different decisions are refused, not merged', () => {
  const x = new Ring(range);
  x.initFrom([A]);
  const y = new Ring(range);
  const dy = y.initFrom([B]);
  assert.throws(() => x.merge(dy), RingConflictError);
  assert.deepEqual(x.ownedBy(A).map(formatCidr), ['10.32.0.0/12']);
});

test('rmpeer takes over the dead peer\'s space and wins against its stale gossip', () => {
  const r = new Ring(range);
  const init = r.initFrom([A, B]);
  const stale = new Ring(range);
  stale.merge(init);
  r.takeOver(B, A);
  r.merge(stale.toData());
  assert.deepEqual(r.ownedBy(A).map(formatCidr), ['10.32.0.0/12']);
});

test('consensus: a quorum decides one value, whatever order gossip arrives in', () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: 2 })), { minLength: 30, maxLength: 120 }), (deliveries) => {
      const names = [A, B, C];
      const ps = names.map((n) => new Consensus(n, 3, false));
      for (const p of ps) p.step(() => true);
      for (const [from, to] of deliveries) {
        if (from === to) continue;
        ps[to]!.merge(structuredClone(ps[from]!.entries.toData()));
        ps[to]!.step(() => true);
      }
      // let everything settle with full exchanges
      for (let round = 0; round < 6; round++) {
        for (const p of ps) for (const q of ps) if (p !== q) q.merge(structuredClone(p.entries.toData()));
        for (const p of ps) p.step(() => true);
      }
      const values = ps.map((p) => JSON.stringify(p.decided()));
      return values.every((v) => v === values[0]) && values[0] !== undefined && JSON.parse(values[0]!).length >= 2;
    }),
  );
});

test('consensus: without a quorum nothing is decided', () => {
  const p = new Consensus(A, 3, false);
  p.step(() => true);
  assert.equal(p.decided(), undefined);
  const alone = new Consensus(A, 1, false);
  alone.step(() => true);
  assert.deepEqual(alone.decided(), [A]);
});

test('consensus: quorums use the largest N any participant was told', () => {
  const a = new Consensus(A, 1, false);
  assert.equal(a.quorum, 1);
  const b = new Consensus(B, 5, false);
  a.merge(b.step(() => true)!);
  assert.equal(a.quorum, 3, 'B was told 5: A needs 3 too');
  // A proposes, but alone it cannot decide with B's N known
  const d = a.step((p) => p === A);
  assert.ok(d);
  assert.equal(a.decided(), undefined);
});
