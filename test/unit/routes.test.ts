/** Unicast routes from the topology alone. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { computeRoutes, type RouteEntry } from '../../src/mesh/routes';

const e = (name: string, ...conns: string[]): RouteEntry => ({ name, conns });

test('a chain: next hops go through the middle; distances count hops', () => {
  const r = computeRoutes('a', [e('a', 'b'), e('b', 'a', 'c'), e('c', 'b')]);
  assert.equal(r.nextHop.get('b'), 'b');
  assert.equal(r.nextHop.get('c'), 'b');
  assert.equal(r.distance.get('c'), 2);
  assert.deepEqual([...r.reachable].sort(), ['a', 'b', 'c']);
});

test('an edge counts only when both ends report it', () => {
  const r = computeRoutes('a', [e('a', 'b', 'c'), e('b'), e('c', 'a')]);
  assert.equal(r.nextHop.has('b'), false, 'b does not report a: not reachable');
  assert.equal(r.nextHop.get('c'), 'c');
  assert.deepEqual([...r.reachable].sort(), ['a', 'c']);
});

test('ties are broken by name, so every router computes the same next hop', () => {
  // a reaches d through b or c, both two hops: the smaller name wins
  const topo = [e('a', 'c', 'b'), e('b', 'a', 'd'), e('c', 'a', 'd'), e('d', 'c', 'b')];
  assert.equal(computeRoutes('a', topo).nextHop.get('d'), 'b');
  assert.equal(computeRoutes('a', [...topo].reverse()).nextHop.get('d'), 'b');
});

test('unknown peers in a connection list and self-loops are ignored', () => {
  const r = computeRoutes('a', [e('a', 'a', 'ghost', 'b'), e('b', 'a')]);
  assert.deepEqual([...r.reachable].sort(), ['a', 'b']);
});

test('property: next hops are neighbours, distances are shortest, and following next hops arrives', () => {
  const names = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];
  fc.assert(
    fc.property(fc.uniqueArray(fc.tuple(fc.integer({ min: 0, max: 7 }), fc.integer({ min: 0, max: 7 })), { maxLength: 28 }), (pairs) => {
      const adj = new Map(names.map((n) => [n, new Set<string>()]));
      for (const [x, y] of pairs) {
        if (x === y) continue;
        adj.get(names[x]!)!.add(names[y]!);
        adj.get(names[y]!)!.add(names[x]!);
      }
      const entries = names.map((n) => e(n, ...adj.get(n)!));
      const r = computeRoutes('a', entries);
      // reference distances by repeated relaxation
      const dist = new Map<string, number>([['a', 0]]);
      for (let round = 0; round < names.length; round++) {
        for (const [n, ns] of adj) for (const m of ns) if (dist.has(m) && (dist.get(n) ?? Infinity) > dist.get(m)! + 1) dist.set(n, dist.get(m)! + 1);
      }
      assert.deepEqual([...r.reachable].sort(), [...dist.keys()].sort());
      for (const [n, d] of dist) {
        assert.equal(r.distance.get(n), d, `distance to ${n}`);
        if (n === 'a') continue;
        assert.ok(adj.get('a')!.has(r.nextHop.get(n)!), `next hop to ${n} is a neighbour`);
        // walking: from each node, the route to n continues through its own next hop
        const rn = computeRoutes(r.nextHop.get(n)!, entries);
        assert.equal(rn.distance.get(n), d - 1, `the next hop towards ${n} is one hop closer`);
      }
    }),
    { numRuns: 300 },
  );
});
