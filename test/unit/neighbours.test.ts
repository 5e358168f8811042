/**
 * The neighbour plan of a large mesh (src/mesh/neighbours.ts): a full mesh up to the limit, a
 * small world beyond it, and no step where every router drops most of its connections at once.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { runs } from '../helpers/property';
import { DEFAULT_PLAN, NeighbourRing } from '../../src/mesh/neighbours';
import { computeRoutes } from '../../src/mesh/routes';

/** Peer names as routers have them (MACs differing in their last bytes). */
const names = (n: number) => Array.from({ length: n }, (_, i) => `0a:00:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`);

/** Who keeps a connection to whom under the plan. */
function graph(ring: NeighbourRing, ns: string[]): Map<string, Set<string>> {
  return new Map(ns.map((a) => [a, new Set(ns.filter((b) => b !== a && ring.wanted(a, b)))]));
}

const hops = (g: Map<string, Set<string>>, from: string) => computeRoutes(from, [...g].map(([name, conns]) => ({ name, conns })));

test('up to the limit the mesh is full; beyond it a connection is wanted by both ends alike', () => {
  const ns = names(DEFAULT_PLAN.fullMeshUpTo);
  const full = new NeighbourRing(ns);
  assert.ok(full.full);
  for (const a of ns.slice(0, 10)) for (const b of ns) if (a !== b) assert.ok(full.wanted(a, b), `${a}-${b}`);
  const big = new NeighbourRing(names(400));
  assert.equal(big.full, false);
  const g = graph(big, names(400));
  for (const [a, conns] of g) for (const b of conns) assert.ok(g.get(b)!.has(a), `${a}-${b} wanted by one end only`);
  // the size planned for may exceed the peers named (a router pointed at many targets)
  assert.equal(new NeighbourRing(names(10), DEFAULT_PLAN, 500).full, false);
});

test('at 1,000 peers: connected, every peer within 8 hops, a dozen connections per router on average', () => {
  const ns = names(1000);
  const g = graph(new NeighbourRing(ns), ns);
  const degrees = [...g.values()].map((s) => s.size);
  const mean = degrees.reduce((a, b) => a + b, 0) / degrees.length;
  assert.ok(mean <= 16, `mean degree ${mean}`);
  assert.ok(Math.max(...degrees) <= 64, `max degree ${Math.max(...degrees)}`);
  for (const from of ns.filter((_, i) => i % 97 === 0)) {
    const t = hops(g, from);
    assert.equal(t.reachable.size, 1000, `all reachable from ${from}`);
    assert.ok(Math.max(...t.distance.values()) <= 8, `farthest from ${from}: ${Math.max(...t.distance.values())} hops`);
  }
});

test('a join drops a few connections per router, never most of them: past the limit and in a large mesh', () => {
  for (const n of [DEFAULT_PLAN.fullMeshUpTo, DEFAULT_PLAN.fullMeshUpTo + 1, 150, 300, 1000]) {
    const ns = names(n);
    const before = graph(new NeighbourRing(ns), ns);
    const after = new NeighbourRing(names(n + 1));
    let total = 0;
    for (const [a, conns] of before) {
      let dropped = 0;
      for (const b of conns) if (!after.wanted(a, b)) dropped++;
      assert.ok(dropped <= 4, `${n} -> ${n + 1}: ${a} drops ${dropped} of ${conns.size}`);
      total += dropped;
    }
    // in a large mesh a join moves the connections near its place on the ring only
    if (n >= 300) assert.ok(total <= 40, `${n} -> ${n + 1}: ${total} connections dropped in all`);
  }
});

test('property: the neighbours of a peer are exactly the peers a connection with it is wanted to', () => {
  fc.assert(
    fc.property(fc.uniqueArray(fc.stringMatching(/^[0-9a-f]{1,4}$/), { minLength: 2, maxLength: 300 }), fc.integer({ min: 0, max: 40 }), (ns, limit) => {
      const ring = new NeighbourRing(ns, { ...DEFAULT_PLAN, fullMeshUpTo: limit });
      for (const a of ns.slice(0, 12)) {
        const want = ns.filter((b) => b !== a && ring.wanted(a, b)).sort();
        assert.deepEqual([...ring.neighbours(a)].sort(), ring.full ? ns.filter((b) => b !== a).sort() : want);
      }
    }),
    { numRuns: runs(200) },
  );
});
