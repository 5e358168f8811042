/**
 * A mesh larger than a full mesh may be, in memory on a virtual clock (the simulation's
 * network, test/sim/memnet.ts): routers keep the connections the neighbour plan gives, and
 * every peer stays reachable.
 */
import { mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as realImmediate } from 'node:timers';
import { Mesh } from '../../src/mesh/mesh';
import { DEFAULT_PLAN, NeighbourRing } from '../../src/mesh/neighbours';
import { createLogger } from '../../src/common/log';
import { MemNet } from '../sim/memnet';

const log = createLogger({ name: 't', level: 'silent' });

async function advance(ms: number): Promise<void> {
  for (let t = 0; t < ms; t += 5) {
    mock.timers.tick(5);
    await new Promise((r) => realImmediate(r));
    await new Promise((r) => realImmediate(r));
  }
}

test('past the full-mesh size each router keeps the neighbours the plan gives it, and reaches every peer', async () => {
  const N = 24;
  const limit = 6;
  const net = new MemNet();
  mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'], now: 1_700_000_000_000 });
  const meshes: Mesh[] = [];
  try {
    for (let i = 0; i < N; i++) {
      const ip = `10.0.0.${i + 1}`;
      const m = new Mesh(
        { self: { name: `0a:00:00:00:00:${i.toString(16).padStart(2, '0')}`, nickname: `p${i}`, uid: `u${i}` }, log, transport: net.transport(ip) },
        { port: 6783, listenAddr: ip, advertise: `${ip}:6783`, heartbeatMs: 1000, refreshMs: 30_000, retryMinMs: 500, retryMaxMs: 5000, handshakeMs: 5000, maxConnections: 200, maxPending: 64, maxPendingPerHost: 16, fullMeshUpTo: limit, pruneAfterMs: 2000 },
      );
      m.setTargets('flags', i === 0 ? [] : ['10.0.0.1:6783']);
      await m.start();
      meshes.push(m);
      await advance(20);
    }
    const ring = new NeighbourRing(
      meshes.map((m) => m.name),
      { ...DEFAULT_PLAN, fullMeshUpTo: limit },
    );
    const plan = (m: Mesh) => [...ring.neighbours(m.name)].sort();
    const peersOf = (m: Mesh) => m.connections().filter((c) => c.established).map((c) => c.peer!).sort();
    const settled = () => meshes.every((m) => m.routes.reachable.size === N && JSON.stringify(peersOf(m)) === JSON.stringify(plan(m)));
    for (let t = 0; t < 60_000 && !settled(); t += 250) await advance(250);
    for (const m of meshes) {
      assert.equal(m.routes.reachable.size, N, `${m.name} reaches every peer`);
      assert.deepEqual(peersOf(m), plan(m), `${m.name} keeps its planned neighbours`);
    }
    const mean = meshes.reduce((n, m) => n + peersOf(m).length, 0) / N;
    assert.ok(mean < N - 1, `not a full mesh: ${mean} connections per router`);
  } finally {
    for (const m of meshes) await m.stop();
    mock.timers.reset();
  }
});
