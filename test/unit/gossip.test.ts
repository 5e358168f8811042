/** Gossip without sockets: digests, the relay rule, and the topology's per-connection keys. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { bucketsFor, MAX_BUCKETS, VersionedMap, type MapData } from '../../src/common/crdt';
import { BUCKETS, digestOf, Gossip, missingFrom, type ChannelHandle, type GossipFrame } from '../../src/mesh/gossip';
import { relayTargets } from '../../src/mesh/relay';
import { Topology } from '../../src/mesh/topology';
import { checkGossip, gossipSchema } from '../../src/mesh/protocol';

const entries = fc.dictionary(fc.stringMatching(/^k[a-z0-9]{0,5}$/), fc.record({ v: fc.integer({ min: 1, max: 9 }), x: fc.integer() }), { maxKeys: 60 });

test('digests: equal states have equal digests whatever the order; what one side lacks is in the buckets that differ, at any fineness', () => {
  fc.assert(
    fc.property(entries, entries, fc.constantFrom(BUCKETS, 256, MAX_BUCKETS), (a, b, n) => {
      const rev = Object.fromEntries(Object.entries(a).reverse());
      assert.deepEqual(digestOf(a, n), digestOf(rev, n));
      assert.equal(digestOf(a, n).length, n);
      // A answers B's digest, B answers A's: afterwards both hold the merge of both
      const ma = new VersionedMap<{ x: number }>();
      const mb = new VersionedMap<{ x: number }>();
      ma.merge(structuredClone(a) as MapData<{ x: number }>);
      mb.merge(structuredClone(b) as MapData<{ x: number }>);
      const toB = missingFrom(ma.toData(), digestOf(mb.toData(), n));
      const toA = missingFrom(mb.toData(), digestOf(ma.toData(), n));
      if (toB) mb.merge(structuredClone(toB) as MapData<{ x: number }>);
      if (toA) ma.merge(structuredClone(toA) as MapData<{ x: number }>);
      const both = new VersionedMap<{ x: number }>();
      both.merge(structuredClone(a) as MapData<{ x: number }>);
      both.merge(structuredClone(b) as MapData<{ x: number }>);
      const byKey = (o: object) => JSON.stringify(Object.entries(o).sort((x, y) => (x[0] < y[0] ? -1 : 1)));
      const sorted = (m: VersionedMap<{ x: number }>) => byKey(m.toData());
      assert.equal(sorted(ma), sorted(both));
      assert.equal(sorted(mb), sorted(both));
    }),
    { numRuns: 300 },
  );
  assert.equal(missingFrom({ k: { v: 1 } }, digestOf({ k: { v: 1 } })), undefined, 'in sync: nothing to send');
});

/**
 * Routers on a graph, each with a Gossip whose broadcast delivers synchronously to neighbours:
 * counts how often each router receives one change. `byWriter`: the channel names each key's
 * writer (key `k` is written by the router that spreads it), so the relay rule by writer applies.
 */
function network(edges: [string, string][], byWriter = false) {
  const names = [...new Set(edges.flat())].sort();
  const adj = new Map(names.map((n) => [n, new Set<string>()]));
  for (const [a, b] of edges) {
    adj.get(a)!.add(b);
    adj.get(b)!.add(a);
  }
  const got = new Map(names.map((n) => [n, 0]));
  const maps = new Map(names.map((n) => [n, new VersionedMap<{ x: number }>()]));
  const gossips = new Map<string, Gossip>();
  const handles = new Map<string, ChannelHandle<{ x: number }>>();
  for (const n of names) {
    const g = new Gossip({
      broadcast: (f: GossipFrame, skip) => {
        for (const m of adj.get(n)!) {
          if (skip?.(m)) continue;
          got.set(m, got.get(m)! + 1);
          gossips.get(m)!.receive(structuredClone(f), n);
        }
      },
      neighbours: () => adj.get(n)!,
      relayTargets: (from, origin, answered, neighbours) => relayTargets({ self: n, conns: (p) => adj.get(p), adjacent: (a, b) => adj.get(a)!.has(b), around: (p) => adj.get(p)!, degree: (p) => adj.get(p)!.size }, from, origin, answered, neighbours),
    });
    const originOf = byWriter ? () => writer : undefined;
    handles.set(n, g.register<{ x: number }>('c', { full: () => maps.get(n)!.toData(), merge: (d) => maps.get(n)!.merge(d), originOf }));
    gossips.set(n, g);
  }
  let writer = '';
  const spread = (origin: string) => {
    writer = origin;
    const m = maps.get(origin)!;
    handles.get(origin)!.gossip({ k: m.set('k', { x: 1 }) });
    // flush until quiet
    for (let round = 0; round < names.length + 2; round++) for (const g of gossips.values()) g.flush();
  };
  return { names, got, maps, spread, stop: () => gossips.forEach((g) => g.stop()) };
}

test('relay rule: in a full mesh each router receives a change once; a chain still carries it to the end', () => {
  const full = network([
    ['a', 'b'], ['a', 'c'], ['a', 'd'], ['b', 'c'], ['b', 'd'], ['c', 'd'],
  ]);
  full.spread('a');
  assert.deepEqual(Object.fromEntries(full.got), { a: 0, b: 1, c: 1, d: 1 });
  full.stop();
  const chain = network([['a', 'b'], ['b', 'c'], ['c', 'd'], ['d', 'e']]);
  chain.spread('a');
  for (const n of chain.names) assert.equal(chain.maps.get(n)!.get('k')?.x, 1, `${n} has it`);
  chain.stop();
});

test('relay rule: on any connected graph every router gets the change, with fewer deliveries than flooding', () => {
  fc.assert(
    fc.property(fc.uniqueArray(fc.tuple(fc.integer({ min: 0, max: 9 }), fc.integer({ min: 0, max: 9 })), { minLength: 9, maxLength: 40 }), fc.integer({ min: 0, max: 9 }), (pairs, o) => {
      const edges = pairs.filter(([x, y]) => x !== y).map(([x, y]) => [`n${x}`, `n${y}`] as [string, string]);
      // connect everything through a spine so the graph is connected
      for (let i = 1; i < 10; i++) edges.push([`n${i - 1}`, `n${i}`]);
      const net = network(edges);
      net.spread(`n${o}`);
      for (const n of net.names) assert.equal(net.maps.get(n)!.get('k')?.x, 1, `${n} has it`);
      const flooding = [...new Set(edges.map(([a, b]) => [a, b].sort().join('-')))].length * 2;
      const deliveries = [...net.got.values()].reduce((a, b) => a + b, 0);
      assert.ok(deliveries <= flooding, `${deliveries} deliveries, flooding would be ${flooding}`);
      net.stop();
    }),
    { numRuns: 200 },
  );
});

test('relay rule by writer: on any connected graph every router gets the change, and each router two hops from the writer gets it once', () => {
  fc.assert(
    fc.property(fc.uniqueArray(fc.tuple(fc.integer({ min: 0, max: 11 }), fc.integer({ min: 0, max: 11 })), { minLength: 9, maxLength: 60 }), fc.integer({ min: 0, max: 11 }), (pairs, o) => {
      const edges = pairs.filter(([x, y]) => x !== y).map(([x, y]) => [`n${x}`, `n${y}`] as [string, string]);
      for (let i = 1; i < 12; i++) edges.push([`n${i - 1}`, `n${i}`]);
      const bySender = network(edges);
      const net = network(edges, true);
      const origin = `n${o}`;
      bySender.spread(origin);
      net.spread(origin);
      for (const n of net.names) assert.equal(net.maps.get(n)!.get('k')?.x, 1, `${n} has it`);
      const near = new Set(edges.filter((e) => e.includes(origin)).flat());
      for (const n of net.names) {
        const twoHops = !near.has(n) && edges.some(([a, b]) => (a === n && near.has(b)) || (b === n && near.has(a)));
        if (twoHops) assert.equal(net.got.get(n), 1, `${n}, two hops from ${origin}, gets one copy`);
      }
      const total = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);
      assert.ok(total(net.got) <= total(bySender.got), `${total(net.got)} deliveries by writer, ${total(bySender.got)} by sender`);
      bySender.stop();
      net.stop();
    }),
    { numRuns: 300 },
  );
  // a full mesh but for one missing connection: a and b each hear it from one common neighbour only
  const names = ['a', 'b', 'c', 'd', 'e', 'f'];
  const nearlyFull = names.flatMap((x, i) => names.slice(i + 1).map((y) => [x, y] as [string, string])).filter(([x, y]) => !(x === 'a' && y === 'b'));
  const bySender = network(nearlyFull);
  const net = network(nearlyFull, true);
  bySender.spread('a');
  net.spread('a');
  assert.equal(bySender.got.get('b'), 4, 'by sender: b hears it from each of the 4 common neighbours');
  assert.equal(net.got.get('b'), 1, 'by writer: once');
  bySender.stop();
  net.stop();
});

test('relay rule by writer: a router the writer has just left still gets the change, though its own stale entry still names the writer', () => {
  // w closed its connection to x and says so (its tombstone is the change); x has not yet
  // noticed and still reports w. x is no neighbour of w now: w's own broadcast missed it, so a
  // relay must not skip x as "next to the writer" on x's word alone
  const reports = new Map<string, Set<string>>([
    ['w', new Set(['a', 'b'])],
    ['x', new Set(['w', 'a'])],
    ['a', new Set(['w', 'x'])],
    ['b', new Set(['w'])],
  ]);
  const adjacentTo = (p: string) => new Set([...(reports.get(p) ?? []), ...[...reports].filter(([, s]) => s.has(p)).map(([q]) => q)]);
  const view = (self: string) => ({ self, conns: (p: string) => reports.get(p), adjacent: (p: string, q: string) => adjacentTo(p).has(q), around: adjacentTo, degree: (p: string) => adjacentTo(p).size });
  assert.deepEqual(relayTargets(view('a'), 'w', 'w', false, ['w', 'x']), ['x'], 'a passes it to x');
  // a neighbour the writer itself reports got it from the writer: not sent again
  assert.deepEqual(relayTargets(view('x'), 'a', 'w', false, ['w', 'a']), []);
});

test('topology: the largest count of peers a peer publishes is kept; it falls when that peer publishes less or is removed', () => {
  const t = new Topology({ name: 'a', uid: 'u1' }, () => undefined);
  const entry = (peers: number | undefined, v: number) => ({ nickname: 'N', uid: 'x', meta: peers === undefined ? {} : { peers }, v });
  assert.equal(t.largestPublished, 0);
  t.merge({ 'p:b': entry(150, 1), 'p:c': entry(125, 1), 'p:d': entry(undefined, 1) } as never);
  assert.equal(t.largestPublished, 150);
  t.merge({ 'p:b': entry(undefined, 2) } as never);
  assert.equal(t.largestPublished, 125, 'b no longer publishes a count');
  t.merge({ 'p:c': entry(-3, 2), 'p:e': entry(1.5, 1) } as never);
  assert.equal(t.largestPublished, 125, 'counts that are not whole numbers are refused with their entries');
  assert.equal(t.get('e'), undefined);
  t.remove('c');
  assert.equal(t.largestPublished, 0);
});

test('topology: a connection is a key of its own; a new connection costs one small delta', () => {
  const t = new Topology({ name: 'a', uid: 'u1' }, () => undefined);
  const d1 = t.setSelf({ name: 'a', nickname: 'A', uid: 'u1', conns: ['b', 'c'], meta: {} })!;
  assert.deepEqual(Object.keys(d1).sort(), ['e:a>b', 'e:a>c', 'p:a']);
  const d2 = t.setSelf({ name: 'a', nickname: 'A', uid: 'u1', conns: ['b', 'c', 'd'], meta: {} })!;
  assert.deepEqual(Object.keys(d2), ['e:a>d'], 'only the new connection');
  const d3 = t.setSelf({ name: 'a', nickname: 'A', uid: 'u1', conns: ['c', 'd'], meta: {} })!;
  assert.deepEqual(d3, { 'e:a>b': { up: false, v: d3['e:a>b']!.v } }, 'a dropped connection is a tombstone');
  assert.equal(t.setSelf({ name: 'a', nickname: 'A', uid: 'u1', conns: ['c', 'd'], meta: {} }), undefined, 'no change, no delta');
});

test('topology: routes need both ends; a stale copy of our own key is written over, never taken', () => {
  const t = new Topology({ name: 'a', uid: 'new' }, () => undefined);
  t.setSelf({ name: 'a', nickname: 'A', uid: 'new', conns: ['b'], meta: {} });
  t.merge({ 'p:b': { nickname: 'B', uid: 'x', meta: {}, v: 5 }, 'e:b>a': { up: true, v: 5 }, 'e:b>c': { up: true, v: 5 }, 'p:c': { nickname: 'C', uid: 'y', meta: {}, v: 5 } } as never);
  t.routing.refresh();
  assert.ok(t.isReachable('b'));
  assert.equal(t.isReachable('c'), false, 'c does not report b');
  t.merge({ 'e:c>b': { up: true, v: 6 } } as never);
  assert.equal(t.isReachable('c'), false, 'readers may see routes up to ROUTES_EVERY_MS old');
  t.routing.refresh();
  assert.ok(t.isReachable('c'));
  assert.equal(t.routes.nextHop.get('c'), 'b');
  // an older incarnation of a reported a connection to z: buried under a tombstone above it
  t.merge({ 'e:a>z': { up: true, v: 10 ** 15 } } as never);
  assert.deepEqual(t.full()['e:a>z'], { up: false, v: 10 ** 15 + 1 });
  assert.deepEqual(t.takeReassertion(), { 'e:a>z': { up: false, v: 10 ** 15 + 1 } });
  assert.equal(t.takeReassertion(), undefined, 'once');
  assert.equal(t.reportsEdge('a', 'z'), false);
  // the same copy of our own current key coming back changes nothing
  t.merge({ 'e:a>b': t.full()['e:a>b'] } as never);
  assert.equal(t.takeReassertion(), undefined);
  // a malformed entry is refused
  assert.equal(t.merge({ 'p:q': { nickname: 1, v: 3 } } as never), undefined);
  assert.equal(t.merge({ 'p:r': { nickname: 'R', uid: 'u', meta: { underlay: 'not-an-ip' }, v: 3 } } as never), undefined, 'meta has a schema');
});

test('a versioned map keeps its digest as it changes: equal to one computed from scratch, after any writes', () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.constantFrom('set', 'put', 'del', 'merge'), fc.stringMatching(/^k[a-d]$/), fc.integer({ min: 1, max: 5 })), { maxLength: 40 }), (ops) => {
      const m = new VersionedMap<{ x: number }>();
      for (const [op, k, n] of ops) {
        if (op === 'set') m.set(k, { x: n });
        else if (op === 'put') m.put(k, { x: n, v: n });
        else if (op === 'del') m.delete(k);
        else m.merge({ [k]: { x: -n, v: n * 2 } });
      }
      for (const n of [BUCKETS, 128, MAX_BUCKETS]) {
        assert.deepEqual(m.digest(n), digestOf(m.toData(), n), `${n} buckets`);
        const all = m.inBuckets(Array.from({ length: n }, (_, i) => i), n);
        assert.deepEqual(Object.keys(all).sort(), m.keys().sort());
      }
    }),
    { numRuns: 300 },
  );
});

test('topology: a burst of changes costs one route computation, and only changes to edges or peers count', () => {
  let changes = 0;
  const t = new Topology({ name: 'a', uid: 'u' }, () => changes++);
  t.setSelf({ name: 'a', nickname: 'A', uid: 'u', conns: ['b'], meta: {} });
  // forty frames' worth of peers and edges, as a forming mesh brings them
  for (let i = 0; i < 40; i++) t.merge({ [`p:n${i}`]: { nickname: `N${i}`, uid: 'x', meta: {}, v: 1 }, [`e:n${i}>b`]: { up: true, v: 1 }, [`e:b>n${i}`]: { up: true, v: 1 } } as never);
  t.merge({ 'p:b': { nickname: 'B', uid: 'y', meta: {}, v: 1 }, 'e:b>a': { up: true, v: 1 } } as never);
  assert.equal(changes, 42);
  const computed = t.routing.computed;
  t.routing.refresh();
  t.routing.refresh();
  assert.equal(t.routing.computed, computed + 1, 'once for the whole burst');
  assert.equal(t.routes.reachable.size, 42);
  // a peer's values change, not its edges: the routes stand
  t.merge({ 'p:n3': { nickname: 'renamed', uid: 'x', meta: {}, v: 2 } } as never);
  t.routing.refresh();
  assert.equal(t.routing.computed, computed + 1);
  assert.equal(t.get('n3')?.nickname, 'renamed');
  // an edge going down does count
  t.merge({ 'e:n3>b': { up: false, v: 2 } } as never);
  t.routing.refresh();
  assert.equal(t.routing.computed, computed + 2);
  assert.equal(t.isReachable('n3'), false);
});

test('topology: a copy of a known entry changes nothing and is passed on by no one; a conflict at the same version still settles by value', () => {
  let changes = 0;
  const t = new Topology({ name: 'a', uid: 'u' }, () => changes++);
  const entry = { 'p:b': { nickname: 'B', uid: 'y', meta: { underlay: '10.0.0.2' }, v: 3 }, 'e:b>a': { up: true, v: 3 } };
  assert.ok(t.merge(structuredClone(entry) as never));
  assert.equal(changes, 1);
  // the same again, keys in another order, and an older copy: no delta, no change
  assert.equal(t.merge({ 'e:b>a': { v: 3, up: true }, 'p:b': { meta: { underlay: '10.0.0.2' }, v: 3, uid: 'y', nickname: 'B' } } as never), undefined);
  assert.equal(t.merge({ 'p:b': { nickname: 'old', uid: 'y', meta: {}, v: 2 } } as never), undefined);
  assert.equal(changes, 1);
  // two values at one version (a fault): the larger serialisation wins, on every router alike
  const d = t.merge({ 'p:b': { nickname: 'C', uid: 'y', meta: { underlay: '10.0.0.2' }, v: 3 } } as never);
  assert.deepEqual(Object.keys(d ?? {}), ['p:b']);
  assert.equal(t.get('b')?.nickname, 'C');
  assert.equal(t.merge({ 'p:b': { nickname: 'A', uid: 'y', meta: { underlay: '10.0.0.2' }, v: 3 } } as never), undefined);
  // a malformed copy at a known version is still refused, not taken for the known one
  assert.equal(t.merge({ 'p:b': { nickname: 'Z', uid: 'y', meta: { underlay: 'bad' }, v: 3 } } as never), undefined);
  assert.equal(t.get('b')?.nickname, 'C');
});

test('gossip frames: the hand check accepts and refuses exactly what the schema does', () => {
  const value = fc.oneof(fc.constant(undefined), fc.boolean(), fc.integer(), fc.string({ maxLength: 3 }), fc.constant(null), fc.constant([]), fc.double());
  // mostly valid frames, each part sometimes wrong
  const often = <T>(good: fc.Arbitrary<T>, bad: fc.Arbitrary<unknown>) => fc.oneof({ arbitrary: good, weight: 5 }, { arbitrary: bad, weight: 1 });
  const entry = often(fc.record({ v: often(fc.integer(), fc.oneof(fc.string({ maxLength: 2 }), fc.double())), x: value }, { requiredKeys: ['v'] }), fc.oneof(value, fc.record({ x: value })));
  const frame = fc.record(
    {
      t: fc.constant('gossip'),
      ch: often(fc.string({ maxLength: 8 }), fc.oneof(fc.string({ minLength: 30, maxLength: 40 }), fc.integer())),
      data: often(fc.dictionary(fc.string({ maxLength: 4 }), entry, { maxKeys: 5 }), value),
      a: often(fc.oneof(fc.constant(undefined), fc.boolean()), value),
      extra: value,
    },
    { requiredKeys: ['t'] },
  );
  let accepted = 0;
  fc.assert(
    fc.property(frame, (f) => {
      const raw = JSON.parse(JSON.stringify(f)) as Record<string, unknown>;
      raw.t = 'gossip';
      const z = gossipSchema.safeParse(raw);
      const h = checkGossip(raw);
      assert.equal(h !== undefined, z.success, JSON.stringify(raw));
      if (z.success) {
        accepted++;
        assert.deepEqual(h, z.data);
      }
    }),
    { numRuns: 2000 },
  );
  assert.ok(accepted > 200, `${accepted} valid frames among the cases`);
});

test('relays batched from one peer leave as one frame with the newest of each key; what was handed in is left alone', () => {
  const sent: GossipFrame[] = [];
  const g = new Gossip({ broadcast: (f) => sent.push(f), neighbours: () => ['p', 'q'], relayTargets: (_f, _o, _a, peers) => peers });
  const maps = new VersionedMap<{ x: number }>();
  g.register<{ x: number }>('c', { full: () => maps.toData(), merge: (d) => maps.merge(d) });
  const first = { a: { x: 1, v: 1 }, b: { x: 1, v: 1 } };
  g.receive({ ch: 'c', data: first }, 'p');
  g.receive({ ch: 'c', data: { b: { x: 2, v: 2 }, c: { x: 1, v: 1 } } as MapData<unknown> }, 'p');
  g.receive({ ch: 'c', data: { a: { x: 1, v: 1 } } as MapData<unknown> }, 'p');
  g.flush(true);
  assert.equal(sent.length, 1);
  assert.deepEqual(sent[0]!.data, { a: { x: 1, v: 1 }, b: { x: 2, v: 2 }, c: { x: 1, v: 1 } });
  assert.deepEqual(first, { a: { x: 1, v: 1 }, b: { x: 1, v: 1 } });
  g.stop();
});

test('a large state is compared in finer buckets: one missing key costs a bucket of ~16 keys, not one of 64ths', () => {
  const mk = () => {
    const m = new VersionedMap<{ x: number }>();
    const g = new Gossip({ broadcast: () => undefined, neighbours: () => [], relayTargets: () => [] });
    g.register<{ x: number }>('c', { full: () => m.toData(), merge: (d) => m.merge(d), digest: (n) => m.digest(n), inBuckets: (b, of) => m.inBuckets(b, of), keyCount: () => m.size });
    return { m, g };
  };
  const a = mk();
  const b = mk();
  for (let i = 0; i < 4000; i++) a.m.put(`k${i}`, { x: i, v: 1 });
  b.m.merge(structuredClone(a.m.toData()));
  b.m.delete('k7');
  assert.equal(bucketsFor(b.m.size), 256);
  const fine = b.g.digest();
  assert.equal(fine.d[0]!.h.length, 256);
  const [answer] = a.g.answer(fine);
  const sent = Object.keys(answer!.data);
  assert.ok(sent.includes('k7'));
  // a peer of protocol 1 gets (and sends) 64 buckets, answered as before
  const coarse = b.g.digest(false);
  assert.equal(coarse.d[0]!.h.length, BUCKETS);
  const [old] = a.g.answer(coarse);
  assert.ok(Object.keys(old!.data).includes('k7'));
  assert.ok(sent.length * 3 < Object.keys(old!.data).length, `${sent.length} keys at 256 buckets, ${Object.keys(old!.data).length} at 64`);
  // a count that is not a power of two in range is not answered
  assert.deepEqual(a.g.answer({ t: 'digest', d: [{ ch: 'c', h: new Array(100).fill(0) }] }), []);
});

test('quiet tombstones: an old dropped connection leaves digests and answers, still beats older copies, and a stale copy is answered with it', (t) => {
  t.mock.timers.enable({ apis: ['Date'], now: 1_000_000 });
  const now = () => Date.now();
  const up = (e: unknown) => (e as { up?: boolean } | undefined)?.up;
  const n = new Topology({ name: 'n', uid: 'u' }, () => undefined, 60_000);
  const bare = new Topology({ name: 'n', uid: 'u' }, () => undefined, 60_000);
  const peers = { 'p:a': { nickname: 'A', uid: 'x', meta: {}, v: 5 }, 'p:b': { nickname: 'B', uid: 'y', meta: {}, v: 5 } };
  n.merge({ ...peers, 'e:a>b': { up: true, v: now() - 1000 } } as never);
  bare.merge(peers as never);
  n.merge({ 'e:a>b': { up: false, v: now() } } as never);
  assert.notDeepEqual(n.digest(256), bare.digest(256), 'a fresh tombstone is in the digest');
  assert.equal(up(n.full()['e:a>b']), false);
  assert.equal(n.keyCount(), 3);
  t.mock.timers.tick(60_001);
  assert.deepEqual(n.digest(256), bare.digest(256), 'a quiet tombstone is not');
  assert.deepEqual(Object.keys(n.inBuckets(Array.from({ length: 64 }, (_, i) => i), 64)).sort(), ['p:a', 'p:b'], 'nor in answers');
  assert.equal(n.full()['e:a>b'], undefined);
  assert.equal(n.keyCount(), 2);
  // a router that missed the tombstone sends its older copy: it loses, and the tombstone goes back out
  assert.equal(n.merge({ 'e:a>b': { up: true, v: now() - 61_001 - 1000 } } as never), undefined);
  assert.equal(n.isReachable('b'), false);
  const back = n.takeReassertion();
  assert.equal(up(back?.['e:a>b']), false, 'the quiet tombstone is sent again');
  assert.equal(n.takeReassertion(), undefined, 'once');
  // the same tombstone arriving again changes nothing and is not sent again
  assert.equal(n.merge({ 'e:a>b': back!['e:a>b']! } as never), undefined);
  assert.equal(n.takeReassertion(), undefined);
  // an old tombstone arriving is quiet at once; a newer copy (the connection made again) is in the digest
  bare.merge({ 'e:a>b': back!['e:a>b']! } as never);
  assert.deepEqual(bare.digest(256), n.digest(256));
  n.merge({ 'e:a>b': { up: true, v: now() } } as never);
  assert.equal(up(n.full()['e:a>b']), true);
  assert.notDeepEqual(n.digest(256), bare.digest(256));
});
