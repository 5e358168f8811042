/**
 * Reclaim of a deleted Node's space, exactly once, with several routers at once against the
 * test API server: each router has its own client, Node watch and record store; IPAM and the
 * mesh are fakes that record what they were asked. Claims expire by a clock the test moves,
 * so nothing here depends on how fast the machine is.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KubeApiError } from '../../src/common/errors';
import { parseRecord, RECORD_NAME, RecordStore, type PeerRecord, type RecordApi } from '../../src/kube/record';
import { decideFromRecord, Reclaimer, registerAndDecide } from '../../src/kube/reclaim';
import { ResourceWatch } from '../../src/kube/watch';
import { nodeObject, quiet, R, until, withKube, type KubeEnv } from '../helpers/kube';

const NS = 'kube-system';
const peerOf = (i: number) => `aa:00:00:00:00:0${i}`;
const nodeOf = (i: number) => `h${i}`;

interface Router {
  peer: string;
  node: string;
  reclaimer: Reclaimer;
  watch: ResourceWatch;
  record: RecordStore;
  /** Moves this router's clock (claims expire by it). */
  skewMs: number;
  selfReclaimed?: string;
}

interface World {
  e: KubeEnv;
  /** rmpeer calls: who, for which peer, and whether it completed. */
  calls: { by: string; peer: string; completed: boolean }[];
  reachable: Set<string>;
  routers: Router[];
  record(): PeerRecord;
}

/** API calls that fail once `dead` is set: a router process that died. */
function mortal(api: RecordApi): RecordApi & { dead: boolean } {
  const m = {
    dead: false,
    getConfigMap: (ns: string, n: string) => (m.dead ? Promise.reject(new KubeApiError('dead', 0)) : api.getConfigMap(ns, n)),
    createConfigMap: (ns: string, b: Parameters<RecordApi['createConfigMap']>[1]) => (m.dead ? Promise.reject(new KubeApiError('dead', 0)) : api.createConfigMap(ns, b)),
    replaceConfigMap: (ns: string, b: Parameters<RecordApi['replaceConfigMap']>[1]) => (m.dead ? Promise.reject(new KubeApiError('dead', 0)) : api.replaceConfigMap(ns, b)),
  };
  return m;
}

/**
 * Nodes h1..hN in the API, routers for the indexes in `running` (each registered before its
 * reclaimer starts, as the composition root does before IPAM loads), and peers registered
 * for the others as routers that ran once.
 */
async function world(
  e: KubeEnv,
  nodes: number,
  running: number[],
  o: { rmpeer?: (r: Router, peer: string) => Promise<{ addresses: number }>; api?: (i: number, api: RecordApi) => RecordApi; deadlineMs?: (i: number) => number } = {},
): Promise<World> {
  for (let i = 1; i <= nodes; i++) e.srv.store.create(R('nodes'), undefined, nodeObject(nodeOf(i), [{ type: 'InternalIP', address: `10.0.0.${i}` }]));
  const w: World = {
    e,
    calls: [],
    reachable: new Set(running.map(peerOf)),
    routers: [],
    record: () => parseRecord(e.srv.store.get(R('configmaps'), NS, RECORD_NAME)).record,
  };
  const client = await e.client();
  for (let i = 1; i <= nodes; i++) {
    if (!running.includes(i)) await registerAndDecide({ record: new RecordStore({ api: client, log: quiet }, { namespace: NS }), log: quiet }, { self: peerOf(i), nodeName: nodeOf(i) });
  }
  for (const i of running) {
    const c = await e.client();
    const record = new RecordStore({ api: o.api ? o.api(i, c) : c, log: quiet }, { namespace: NS, deadlineMs: o.deadlineMs?.(i) });
    const watch = new ResourceWatch({ client: c, log: quiet }, { resource: 'nodes' });
    const r: Router = { peer: peerOf(i), node: nodeOf(i), record, watch, skewMs: 0 } as Router;
    r.reclaimer = new Reclaimer(
      {
        self: r.peer,
        nodeName: r.node,
        record,
        nodes: watch,
        ipam: {
          rmpeer: async (peer) => {
            if (o.rmpeer) return o.rmpeer(r, peer);
            w.calls.push({ by: r.peer, peer, completed: true });
            return { addresses: 1024 };
          },
          ringReady: () => true,
        },
        mesh: { isReachable: (p) => w.reachable.has(p) },
        log: quiet,
        now: () => Date.now() + r.skewMs,
        onSelfReclaimed: (by) => (r.selfReclaimed = by),
      },
      { sweepMs: 3_600_000 },
    );
    await registerAndDecide({ record, log: quiet }, { self: r.peer, nodeName: r.node });
    await watch.start();
    await watch.waitSynced(10_000);
    w.routers.push(r);
  }
  return w;
}

async function stopAll(w: World): Promise<void> {
  for (const r of w.routers) {
    await r.reclaimer.stop();
    await r.watch.stop();
  }
}

test('a deleted Node: of five routers seeing it at once, exactly one takes over its space', async () => {
  await withKube(async (e) => {
    const w = await world(e, 6, [1, 2, 3, 4, 5]);
    try {
      for (const r of w.routers) await r.reclaimer.start();
      const dead = peerOf(6);
      assert.ok(w.record().peers[dead], 'the dead peer was registered');
      e.srv.store.delete(R('nodes'), undefined, nodeOf(6));
      // every router sees the deletion; and all sweep at once on top of that
      await until('every watch to see it', () => w.routers.every((r) => !r.watch.get(nodeOf(6))));
      const outcomes = await Promise.all(w.routers.map((r) => r.reclaimer.sweep()));
      await until('the reclaim to finish', () => w.record().reclaimed[dead] && !w.record().peers[dead]);
      await Promise.all(w.routers.map((r) => r.reclaimer.sweep()));
      const rec = w.record();
      assert.equal(w.calls.length, 1, `rmpeer calls: ${JSON.stringify(w.calls)}`);
      assert.equal(w.calls[0]!.peer, dead);
      assert.equal(rec.lastReclaim!.by, w.calls[0]!.by);
      assert.equal(rec.lastReclaim!.peer, dead);
      assert.equal(rec.lastReclaim!.node, nodeOf(6));
      assert.equal(rec.lastReclaim!.addresses, 1024);
      assert.equal(rec.reclaimed[dead]!.by, w.calls[0]!.by);
      assert.deepEqual(rec.claims, {});
      // the living routers are all still registered
      assert.deepEqual(Object.keys(rec.peers).sort(), w.routers.map((r) => r.peer).sort());
      for (const o of outcomes) for (const v of o.values()) assert.ok(['reclaimed', 'busy', 'gone'].includes(v), v);
    } finally {
      await stopAll(w);
    }
  });
});

test('a reclaimer that dies halfway holds its claim; once it expires another router finishes the job', async () => {
  await withKube(async (e) => {
    const apis = new Map<number, ReturnType<typeof mortal>>();
    const w = await world(e, 5, [1, 2, 3, 4], {
      api: (i, api) => {
        const m = mortal(api);
        apis.set(i, m);
        return m;
      },
      deadlineMs: (i) => (i === 1 ? 200 : 30_000),
      rmpeer: async (r, peer) => {
        if (r.peer === peerOf(1)) {
          // router 1 dies in the middle of the takeover: nothing it does reaches the API any more
          w.calls.push({ by: r.peer, peer, completed: false });
          apis.get(1)!.dead = true;
          throw new Error('killed');
        }
        w.calls.push({ by: r.peer, peer, completed: true });
        return { addresses: 512 };
      },
    });
    try {
      const dead = peerOf(5);
      e.srv.store.delete(R('nodes'), undefined, nodeOf(5));
      await until('router 1 to see it', () => !w.routers[0]!.watch.get(nodeOf(5)));
      const first = await w.routers[0]!.reclaimer.sweep().catch((err: Error) => err);
      assert.ok(first instanceof Error || first.get(dead) === 'failed');
      const claim = w.record().claims[dead];
      assert.equal(claim?.holder, peerOf(1), 'the dead router still holds its claim');
      // the others: busy while the claim is valid
      for (const r of w.routers.slice(1)) await until('the deletion', () => !r.watch.get(nodeOf(5)));
      const busy = await Promise.all(w.routers.slice(1).map((r) => r.reclaimer.sweep()));
      assert.deepEqual(busy.map((o) => o.get(dead)), ['busy', 'busy', 'busy']);
      assert.equal(w.calls.length, 1);
      // time passes beyond the lease (on the living routers' clocks)
      for (const r of w.routers.slice(1)) r.skewMs = 61_000;
      const after = await Promise.all(w.routers.slice(1).map((r) => r.reclaimer.sweep()));
      const winners = after.filter((o) => o.get(dead) === 'reclaimed');
      assert.equal(winners.length, 1, JSON.stringify(after.map((o) => [...o])));
      const done = w.calls.filter((c) => c.completed);
      assert.equal(done.length, 1);
      const rec = w.record();
      assert.equal(rec.lastReclaim!.by, done[0]!.by);
      assert.equal(rec.lastReclaim!.previousHolder, peerOf(1));
      assert.equal(rec.lastReclaim!.addresses, 512);
      assert.equal(rec.peers[dead], undefined);
      assert.deepEqual(rec.claims, {});
    } finally {
      await stopAll(w);
    }
  });
});

test('a takeover whose record write failed is recorded on the next sweep without a second rmpeer', async () => {
  await withKube(async (e) => {
    let cut: ReturnType<typeof mortal> | undefined;
    const w = await world(e, 3, [1, 2], {
      api: (i, api) => (i === 1 ? (cut = mortal(api)) : api),
      deadlineMs: (i) => (i === 1 ? 200 : 30_000),
      rmpeer: async (r, peer) => {
        w.calls.push({ by: r.peer, peer, completed: true });
        // the API goes away right after the takeover
        if (r.peer === peerOf(1)) cut!.dead = true;
        return { addresses: 256 };
      },
    });
    try {
      const dead = peerOf(3);
      e.srv.store.delete(R('nodes'), undefined, nodeOf(3));
      const r1 = w.routers[0]!;
      await until('the deletion', () => !r1.watch.get(nodeOf(3)));
      await assert.rejects(r1.reclaimer.sweep(), KubeApiError);
      assert.equal(w.record().claims[dead]?.holder, r1.peer);
      cut!.dead = false;
      const again = await r1.reclaimer.sweep();
      assert.equal(again.get(dead), 'reclaimed');
      assert.equal(w.calls.length, 1);
      assert.equal(w.record().lastReclaim!.addresses, 256);
      assert.equal(w.record().lastReclaim!.by, r1.peer);
    } finally {
      await stopAll(w);
    }
  });
});

test('a peer still reachable is not reclaimed, and leaves no claim behind', async () => {
  await withKube(async (e) => {
    const w = await world(e, 3, [1, 2]);
    try {
      w.reachable.add(peerOf(3));
      e.srv.store.delete(R('nodes'), undefined, nodeOf(3));
      await until('the deletion', () => !w.routers[0]!.watch.get(nodeOf(3)));
      const o = await w.routers[0]!.reclaimer.sweep();
      assert.equal(o.get(peerOf(3)), 'reachable');
      assert.equal(w.calls.length, 0);
      assert.deepEqual(w.record().claims, {});
      assert.ok(w.record().peers[peerOf(3)]);
      // gone for real: now it is taken over
      w.reachable.delete(peerOf(3));
      assert.equal((await w.routers[0]!.reclaimer.sweep()).get(peerOf(3)), 'reclaimed');
    } finally {
      await stopAll(w);
    }
  });
});

test('wipe or keep: a reclaimed peer restarting on a re-created Node starts empty, and registering clears it', async () => {
  await withKube(async (e) => {
    const w = await world(e, 3, [1, 2]);
    try {
      const c = await e.client();
      const store = new RecordStore({ api: c, log: quiet }, { namespace: NS });
      const old = peerOf(3);
      // still registered: keep
      assert.equal(decideFromRecord(w.record(), { self: old, nodeName: nodeOf(3) }).decision, 'keep');
      e.srv.store.delete(R('nodes'), undefined, nodeOf(3));
      await until('the deletion', () => !w.routers[0]!.watch.get(nodeOf(3)));
      assert.equal((await w.routers[0]!.reclaimer.sweep()).get(old), 'reclaimed');
      // the Node comes back with the same machine, the same peer name and the old state on disk
      e.srv.store.create(R('nodes'), undefined, nodeObject(nodeOf(3), [{ type: 'InternalIP', address: '10.0.0.3' }]));
      const d = await registerAndDecide({ record: store, log: quiet }, { self: old, nodeName: nodeOf(3) });
      assert.equal(d.decision, 'wipe');
      assert.match(d.reason, /reclaimed by/);
      assert.equal(w.record().reclaimed[old], undefined, 'the tombstone is cleared by registering');
      assert.equal(w.record().peers[old]!.node, nodeOf(3));
      // and the next start keeps its (new) state
      assert.equal((await registerAndDecide({ record: store, log: quiet }, { self: old, nodeName: nodeOf(3) })).decision, 'keep');
    } finally {
      await stopAll(w);
    }
  });
});

test('wipe or keep: a new peer name on a Node the record maps to another peer starts empty; the old peer is reclaimed', async () => {
  await withKube(async (e) => {
    const w = await world(e, 3, [1, 2]);
    try {
      const store = new RecordStore({ api: await e.client(), log: quiet }, { namespace: NS });
      const fresh = 'bb:00:00:00:00:03';
      const d = await registerAndDecide({ record: store, log: quiet }, { self: fresh, nodeName: nodeOf(3) });
      assert.equal(d.decision, 'wipe');
      assert.equal(w.record().peers[peerOf(3)]!.supersededBy, fresh);
      // the old incarnation's space is reclaimed although its Node exists
      w.reachable.add(fresh);
      const o = await w.routers[1]!.reclaimer.sweep();
      assert.equal(o.get(peerOf(3)), 'reclaimed');
      assert.equal(o.has(fresh), false);
      assert.deepEqual(w.calls.map((c) => c.peer), [peerOf(3)]);
      // a brand-new peer on a brand-new Node keeps (empty) state
      assert.equal(decideFromRecord(w.record(), { self: 'cc:00:00:00:00:09', nodeName: 'h9' }).decision, 'keep');
    } finally {
      await stopAll(w);
    }
  });
});

test('wipe or keep: a peer that starts while another router holds a claim on it starts empty and cancels the claim', async () => {
  await withKube(async (e) => {
    const w = await world(e, 3, [1, 2]);
    try {
      const store = new RecordStore({ api: await e.client(), log: quiet }, { namespace: NS });
      await store.update((r) => ({ ...r, claims: { [peerOf(3)]: { holder: peerOf(1), holderNode: nodeOf(1), since: new Date().toISOString(), expires: new Date(Date.now() + 60_000).toISOString() } } }));
      const d = await registerAndDecide({ record: store, log: quiet }, { self: peerOf(3), nodeName: nodeOf(3) });
      assert.equal(d.decision, 'wipe');
      assert.match(d.reason, /being reclaimed/);
      assert.deepEqual(w.record().claims, {});
      assert.ok(w.record().peers[peerOf(3)]);
    } finally {
      await stopAll(w);
    }
  });
});

test('a running router whose own peer was reclaimed (cut off while its Node was deleted) is told so', async () => {
  await withKube(async (e) => {
    const w = await world(e, 2, [1, 2]);
    try {
      const [r1, r2] = w.routers as [Router, Router];
      w.reachable.delete(r2.peer);
      e.srv.store.delete(R('nodes'), undefined, r2.node);
      await until('the deletion', () => !r1.watch.get(r2.node));
      assert.equal((await r1.reclaimer.sweep()).get(r2.peer), 'reclaimed');
      await r2.reclaimer.sweep();
      assert.equal(r2.selfReclaimed, r1.peer);
    } finally {
      await stopAll(w);
    }
  });
});

test('the first router with a ring marks it in the record', async () => {
  await withKube(async (e) => {
    const w = await world(e, 2, [1, 2]);
    try {
      assert.equal(w.record().ring, undefined);
      await w.routers[1]!.reclaimer.sweep();
      assert.equal(w.record().ring!.by, w.routers[1]!.peer);
      await w.routers[0]!.reclaimer.sweep();
      assert.equal(w.record().ring!.by, w.routers[1]!.peer, 'the first mark stays');
    } finally {
      await stopAll(w);
    }
  });
});
