/**
 * The ring against a model of who owns what: a list of stretches, changed by hand the way a
 * gift or a takeover must change it. Long chains of gifts across many peers; after each one
 * the ring must say exactly what the model says (the stretches partition the range, every
 * address has one owner, a gift moves exactly its block and nothing else), and replicas that
 * receive the deltas in any order, some twice, must agree with it.
 *
 * Equivalent mutants in src/ipam/ring.ts, which no test can kill (run of 2026-11-28):
 * - spanToCidrs `a === 0 ? 2 ** 32 : ...` -> the other branch, and countTrailingZeros'
 *   `c < 32` -> `true` / `c <= 32`: only 0 has 32 trailing zeros, and it gives 2 ** 32 either way;
 * - the text hashed into the epoch: every peer computes it with the same code, so any text
 *   gives equal epochs for equal decisions (a test pinning the hash would be a typed figure);
 * - give's `start > block.base` -> `>=`: the token at the block's start is written just before;
 * - largestFreeBlock's `best.prefix <= c.prefix` -> `<`, and the sort of the owned blocks:
 *   they only change which of two equally large free blocks in different owned blocks is
 *   given, and either is a correct gift (the top one within a block is still checked).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { runs } from '../helpers/property';
import { largestFreeBlock, Ring, RingConflictError, spanToCidrs, type RingData, type Span } from '../../src/ipam/ring';
import { lastOf, parseCidr, sizeOf, type Cidr } from '../../src/common/ip';

const range = parseCidr('10.32.0.0/12')!;
const END = lastOf(range);
const PEERS = Array.from({ length: 8 }, (_, i) => `02:00:00:00:00:${(i + 1).toString(16).padStart(2, '0')}`);

/** Ownership as sorted stretches, neighbours of one owner joined: the shape `Ring.spans()` reports. */
function normal(spans: readonly Span[]): Span[] {
  const out: Span[] = [];
  for (const s of [...spans].sort((a, b) => a.first - b.first)) {
    const prev = out[out.length - 1];
    if (prev && prev.owner === s.owner && prev.last + 1 === s.first) prev.last = s.last;
    else out.push({ ...s });
  }
  return out;
}

/** The model's gift: [first, last] now belongs to `to`; everything else stays. */
function assign(model: Span[], first: number, last: number, to: string): Span[] {
  const out: Span[] = [];
  for (const s of model) {
    if (s.last < first || s.first > last) out.push(s);
    else {
      if (s.first < first) out.push({ first: s.first, last: first - 1, owner: s.owner });
      if (s.last > last) out.push({ first: last + 1, last: s.last, owner: s.owner });
    }
  }
  out.push({ first, last, owner: to });
  return normal(out);
}

function ownerIn(model: Span[], a: number): string | undefined {
  return model.find((s) => s.first <= a && a <= s.last)?.owner;
}

/** The partition invariant: stretches in order, back to back, from the first address of the range to its last. */
function assertPartition(spans: readonly Span[]): void {
  assert.equal(spans[0]!.first, range.base);
  assert.equal(spans[spans.length - 1]!.last, END);
  for (let i = 1; i < spans.length; i++) {
    assert.equal(spans[i]!.first, spans[i - 1]!.last + 1, 'no gap, no overlap');
    assert.notEqual(spans[i]!.owner, spans[i - 1]!.owner, 'neighbours of one owner read as one');
  }
}

/** Checks everything the ring reports about ownership against the model. */
function assertAgrees(r: Ring, model: Span[], probes: number[]): void {
  const spans = r.spans();
  assertPartition(spans);
  assert.deepEqual(spans, model);
  const sizes = r.sizes();
  let total = 0;
  for (const p of new Set(model.map((s) => s.owner))) {
    const want = model.filter((s) => s.owner === p).reduce((n, s) => n + s.last - s.first + 1, 0);
    assert.equal(sizes.get(p), want, `size of ${p}`);
    total += want;
    // ownedBy: aligned blocks that cover exactly the peer's stretches
    const blocks = r.ownedBy(p);
    for (const b of blocks) assert.equal(b.base % sizeOf(b), 0, 'aligned');
    assert.equal(blocks.reduce((n, b) => n + sizeOf(b), 0), want);
    for (const b of blocks) assert.equal(ownerIn(model, b.base), p);
  }
  assert.equal(total, sizeOf(range));
  assert.equal(sizes.size, new Set(model.map((s) => s.owner)).size);
  for (const a of probes) assert.equal(r.ownerOf(a), ownerIn(model, a), `owner of address ${a}`);
  // an address at either edge of each stretch, the places a lost token shows
  for (const s of model) {
    assert.equal(r.ownerOf(s.first), s.owner);
    assert.equal(r.ownerOf(s.last), s.owner);
  }
}

test('property: initFrom gives every member one aligned share, the same whatever the order the members are listed in', () => {
  fc.assert(
    fc.property(fc.shuffledSubarray(PEERS, { minLength: 1 }), fc.integer({ min: 0, max: 1000 }), (members, rot) => {
      const r = new Ring(range);
      const delta = r.initFrom(members);
      assert.equal(r.initialised(), true);
      const spans = r.spans();
      assertPartition(spans);
      assert.deepEqual(new Set(spans.map((s) => s.owner)), new Set(members));
      for (const s of spans) {
        const n = s.last - s.first + 1;
        assert.equal(n & (n - 1), 0, 'a power of two');
        assert.equal(s.first % n, 0, 'aligned');
        assert.ok(n >= sizeOf(range) / 2 ** Math.ceil(Math.log2(members.length)), 'no member gets less than an even split rounded down');
      }
      // name order decides, not the order given (a rotation plus a repeat)
      const other = new Ring(range);
      const rotated = [...members.slice(rot % members.length), ...members.slice(0, rot % members.length), members[0]!];
      assert.deepEqual(other.initFrom(rotated), delta);
      assert.deepEqual(r.initFrom(members), {}, 'a second init changes nothing');
      const replica = new Ring(range);
      replica.merge(structuredClone(delta));
      assert.deepEqual(replica.spans(), spans);
    }),
    { numRuns: runs(200) },
  );
});

type Gift = { from: number; to: number; pick: number; depth: number; lower: boolean };
const giftArb: fc.Arbitrary<Gift> = fc.record({
  from: fc.nat(PEERS.length - 1),
  to: fc.nat(PEERS.length - 1),
  pick: fc.nat(),
  depth: fc.integer({ min: 0, max: 6 }),
  lower: fc.boolean(),
});

test('property: a long chain of gifts across eight peers moves exactly each block; replicas agree in any order of delivery', () => {
  fc.assert(
    fc.property(
      fc.subarray(PEERS, { minLength: 1, maxLength: 3 }),
      fc.array(giftArb, { minLength: 30, maxLength: 150 }),
      fc.array(fc.integer({ min: range.base, max: END }), { minLength: 20, maxLength: 20 }),
      fc.nat(),
      (seeds, gifts, probes, seed) => {
        const r = new Ring(range);
        const init = r.initFrom(seeds);
        let model = normal(r.spans());
        const deltas: RingData[] = [];
        let given = 0;
        for (const g of gifts) {
          const from = PEERS[g.from]!;
          const to = PEERS[g.to]!;
          const owned = r.ownedBy(from);
          if (owned.length === 0 || from === to) continue;
          // a block inside one of the donor's blocks: some way down, upper or lower end
          const b = owned[g.pick % owned.length]!;
          const depth = Math.min(g.depth, 32 - b.prefix);
          const size = sizeOf(b) / 2 ** depth;
          const block: Cidr = { base: g.lower ? b.base : b.base + sizeOf(b) - size, prefix: b.prefix + depth };
          deltas.push(r.give(from, to, block));
          model = assign(model, block.base, lastOf(block), to);
          given++;
          assertAgrees(r, model, probes);
        }
        assert.ok(given > 0 || gifts.every((g) => g.from === g.to || !seeds.includes(PEERS[g.from]!)));
        // a replica gets the decision first, then every delta in a shuffled order, some twice
        const order = deltas.map((_, i) => i).sort((x, y) => ((x * 7919 + seed) % 104729) - ((y * 7919 + seed) % 104729));
        const replica = new Ring(range);
        replica.merge(structuredClone(init));
        for (const i of order) replica.merge(structuredClone(deltas[i]!));
        for (const i of order.slice(0, 5)) assert.equal(replica.merge(structuredClone(deltas[i]!)), undefined, 'a repeated delta is no change');
        assertAgrees(replica, model, probes);
        // and one that only ever sees the full state
        const late = new Ring(range);
        late.merge(r.toData());
        assert.deepEqual(late.spans(), model);
        assert.deepEqual(late.toData(), r.toData());
      },
    ),
    { numRuns: runs(40) },
  );
});

test('property: a gift of anything the donor does not wholly own is refused and changes nothing', () => {
  fc.assert(
    fc.property(fc.array(giftArb, { minLength: 5, maxLength: 30 }), fc.integer({ min: range.base, max: END }), fc.integer({ min: 12, max: 32 }), fc.nat(PEERS.length - 1), (gifts, at, prefix, who) => {
      const r = new Ring(range);
      r.initFrom(PEERS.slice(0, 3));
      for (const g of gifts) {
        const owned = r.ownedBy(PEERS[g.from]!);
        if (owned.length && g.from !== g.to) {
          const b = owned[g.pick % owned.length]!;
          r.give(PEERS[g.from]!, PEERS[g.to]!, { base: b.base, prefix: Math.min(32, b.prefix + g.depth) });
        }
      }
      const from = PEERS[who]!;
      const block = { base: at - (at % 2 ** (32 - prefix)), prefix };
      const mine = r.spans().some((s) => s.owner === from && s.first <= block.base && s.last >= lastOf(block));
      const before = JSON.stringify(r.toData());
      if (mine) {
        r.give(from, 'x', block);
        assert.equal(r.ownerOf(block.base), 'x');
        assert.equal(r.ownerOf(lastOf(block)), 'x');
      } else {
        assert.throws(() => r.give(from, 'x', block), /does not own the whole of the block/);
        assert.equal(JSON.stringify(r.toData()), before);
      }
    }),
    { numRuns: runs(300) },
  );
});

test('property: rmpeer moves exactly the dead peer\'s stretches, and wins over its stale gossip in any order', () => {
  fc.assert(
    fc.property(fc.array(giftArb, { minLength: 10, maxLength: 60 }), fc.nat(PEERS.length - 1), fc.nat(PEERS.length - 1), (gifts, d, t) => {
      fc.pre(d !== t);
      const r = new Ring(range);
      const init = r.initFrom(PEERS.slice(0, 4));
      for (const g of gifts) {
        const owned = r.ownedBy(PEERS[g.from]!);
        if (owned.length && g.from !== g.to) {
          const b = owned[g.pick % owned.length]!;
          r.give(PEERS[g.from]!, PEERS[g.to]!, { base: b.base, prefix: b.prefix + Math.min(g.depth, 32 - b.prefix) });
        }
      }
      const stale = r.toData();
      const dead = PEERS[d]!;
      const heir = PEERS[t]!;
      const model = normal(r.spans().map((s) => (s.owner === dead ? { ...s, owner: heir } : s)));
      const delta = r.takeOver(dead, heir);
      assert.deepEqual(r.spans(), model);
      assert.equal(r.sizes().get(dead), undefined);
      // a peer that still had the dead peer's entries hears of the takeover before or after them
      for (const first of [true, false]) {
        const other = new Ring(range);
        other.merge(structuredClone(init));
        if (first) other.merge(structuredClone(delta));
        other.merge(structuredClone(stale));
        if (!first) other.merge(structuredClone(delta));
        assert.deepEqual(other.spans(), model);
      }
    }),
    { numRuns: runs(100) },
  );
});

test('merge: tokens without an epoch wait for one; a ring of another epoch is refused and leaves this one as it was', () => {
  const a = new Ring(range);
  const init = a.initFrom([PEERS[0]!]);
  const gift = a.give(PEERS[0]!, PEERS[1]!, { base: range.base + sizeOf(range) / 2, prefix: 13 });
  const fresh = new Ring(range);
  assert.equal(fresh.merge(structuredClone(gift)), undefined, 'a gift alone cannot be placed');
  assert.equal(fresh.initialised(), false);
  const d = fresh.merge(structuredClone(init))!;
  assert.equal(d.epoch!.epoch, init.epoch!.epoch, 'the epoch is adopted and passed on');
  assert.ok(Object.keys(d).some((k) => k.startsWith('t:')));
  fresh.merge(structuredClone(gift));
  assert.deepEqual(fresh.spans(), a.spans());
  const b = new Ring(range);
  const other = b.initFrom([PEERS[2]!]);
  const before = JSON.stringify(fresh.toData());
  assert.throws(() => fresh.merge(structuredClone(other)), (e: unknown) => e instanceof RingConflictError && /seeded by different peers/.test(e.message));
  assert.equal(JSON.stringify(fresh.toData()), before);
  // entries that are not tokens, or tokens without an owner, are ignored
  assert.equal(fresh.merge({ epoch: init.epoch!, 'x:1': { owner: 'z', v: 99 } as never, [`t:${range.base}`]: { v: 99 } as never }), undefined);
  assert.deepEqual(fresh.spans(), a.spans());
});

test('property: largestFreeBlock is a largest aligned block of owned space with nothing used in it, the top one on a tie', () => {
  const base = parseCidr('10.32.0.0/24')!.base;
  // the /24 cut into aligned blocks of random sizes, some of them owned
  const ownedArb = fc.array(fc.tuple(fc.integer({ min: 26, max: 30 }), fc.boolean()), { minLength: 1, maxLength: 40 }).map((parts) => {
    const owned: Cidr[] = [];
    let at = base;
    for (const [prefix, mine] of parts) {
      const size = 2 ** (32 - prefix);
      if (at % size !== 0 || at + size > base + 256) continue;
      if (mine) owned.push({ base: at, prefix });
      at += size;
    }
    return owned;
  });
  fc.assert(
    fc.property(ownedArb, fc.array(fc.nat(255), { maxLength: 60 }), (owned, usedOffsets) => {
      const used = usedOffsets.map((o) => base + o);
      const isUsed = new Set(used);
      const free = (c: Cidr) => {
        for (let a = c.base; a <= lastOf(c); a++) if (isUsed.has(a)) return false;
        return true;
      };
      // every aligned block inside an owned one, free of used addresses
      const candidates: { c: Cidr; in: Cidr }[] = [];
      for (const o of owned) for (let p = o.prefix; p <= 32; p++) for (let b = o.base; b <= lastOf(o); b += 2 ** (32 - p)) if (free({ base: b, prefix: p })) candidates.push({ c: { base: b, prefix: p }, in: o });
      const got = largestFreeBlock(owned, used);
      if (candidates.length === 0) return assert.equal(got, undefined);
      assert.ok(got);
      const best = Math.min(...candidates.map((x) => x.c.prefix));
      assert.equal(got.prefix, best, 'no larger free block exists');
      const home = candidates.find((x) => x.c.base === got.base && x.c.prefix === got.prefix);
      assert.ok(home, 'inside owned space, aligned, nothing used in it');
      const rivals = candidates.filter((x) => x.in === home.in && x.c.prefix === best);
      assert.equal(got.base, Math.max(...rivals.map((x) => x.c.base)), 'the top one of its owned block');
    }),
    { numRuns: runs(300) },
  );
});

test('spanToCidrs covers the very start of the address space and all of it', () => {
  assert.deepEqual(spanToCidrs(0, 2 ** 32 - 1), [{ base: 0, prefix: 0 }]);
  assert.deepEqual(spanToCidrs(0, 5), [
    { base: 0, prefix: 30 },
    { base: 4, prefix: 31 },
  ]);
  assert.deepEqual(spanToCidrs(7, 7), [{ base: 7, prefix: 32 }]);
  assert.deepEqual(spanToCidrs(8, 7), []);
});

test('a gift spanning several tokens of the donor moves all of them (space it got back by rmpeer, then gave again)', () => {
  const [a, b, c] = PEERS as [string, string, string];
  const r = new Ring(range);
  r.initFrom([a, b]); // a: 10.32.0.0/13, b: 10.40.0.0/13, tokens at both starts
  r.takeOver(b, a); // a owns the whole range, through two tokens
  assert.deepEqual(r.spans(), [{ first: range.base, last: END, owner: a }]);
  const delta = r.give(a, c, range); // the whole range, across the token at 10.40.0.0
  assert.deepEqual(r.spans(), [{ first: range.base, last: END, owner: c }]);
  assert.deepEqual(Object.keys(delta).sort(), [`t:${range.base}`, `t:${range.base + sizeOf(range) / 2}`].sort(), 'both tokens in the delta');
  // a block that starts on the donor's first token and ends before its second keeps the second
  const r2 = new Ring(range);
  r2.initFrom([a, b]);
  r2.takeOver(b, a);
  r2.give(a, c, { base: range.base, prefix: 13 });
  assert.deepEqual(r2.spans(), [
    { first: range.base, last: range.base + sizeOf(range) / 2 - 1, owner: c },
    { first: range.base + sizeOf(range) / 2, last: END, owner: a },
  ]);
  // one that ends on the last address before the second token, in its upper half
  const r3 = new Ring(range);
  r3.initFrom([a, b]);
  r3.takeOver(b, a);
  r3.give(a, c, { base: range.base + sizeOf(range) / 4, prefix: 14 });
  assert.equal(r3.ownerOf(range.base + sizeOf(range) / 2 - 1), c);
  assert.equal(r3.ownerOf(range.base + sizeOf(range) / 2), a);
  assert.equal(r3.ownerOf(range.base + sizeOf(range) / 4 - 1), a);
  // a donor token on the very last address of the block moves too
  const r4 = new Ring(range);
  r4.initFrom([a]);
  r4.give(a, b, { base: END, prefix: 32 });
  r4.give(b, a, { base: END, prefix: 32 });
  r4.give(a, c, range);
  assert.deepEqual(r4.spans(), [{ first: range.base, last: END, owner: c }]);
});

test('tokens outside the range are never read as ownership', () => {
  const r = new Ring(range);
  const init = r.initFrom([PEERS[0]!]);
  r.merge({ ...init, [`t:${END + 1}`]: { owner: PEERS[1]!, v: 5 }, [`t:${range.base - 1}`]: { owner: PEERS[1]!, v: 5 } });
  assert.deepEqual(r.spans(), [{ first: range.base, last: END, owner: PEERS[0]! }]);
  assert.equal(r.sizes().get(PEERS[1]!), undefined);
  const fresh = new Ring(range);
  assert.deepEqual(fresh.toData(), {}, 'no epoch before a decision');
});

test('more members than addresses: each address still gets exactly one owner', () => {
  const tiny = parseCidr('10.32.0.0/31')!;
  const r = new Ring(tiny);
  r.initFrom(PEERS.slice(0, 5));
  const spans = r.spans();
  assert.deepEqual(spans.map((s) => [s.first - tiny.base, s.last - tiny.base]), [
    [0, 0],
    [1, 1],
  ]);
  assert.deepEqual([...r.sizes().values()], [1, 1]);
});
