/**
 * Kubernetes mode as the router will run it (KubeMode), several routers against one test API
 * server: the first start agrees by consensus over the Nodes, a Node added later joins as an
 * observer and every running router's peer source picks it up with no restart.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KubeApiError } from '../../src/common/errors';
import { startApiServer } from '../../src/kube/apiserver/server';
import { writeKubeconfig } from '../../src/kube/apiserver/kubeconfig';
import { KubeMode } from '../../src/kube/mode';
import { nodeObject, quiet, R, until, withKube } from '../helpers/kube';

const ip = (i: number) => `10.0.0.${i}`;
const peer = (i: number) => `aa:00:00:00:00:0${i}`;

test('first start: consensus over the Nodes; a Node added later joins as observer; peers follow with no restart', async () => {
  await withKube(async (e) => {
    for (const i of [1, 2, 3]) e.srv.store.create(R('nodes'), undefined, nodeObject(`h${i}`, [{ type: 'InternalIP', address: ip(i) }]));
    const modes: KubeMode[] = [];
    const targets = new Map<number, string[]>();
    try {
      for (const i of [1, 2, 3]) {
        const m = await KubeMode.connect({ kubeconfig: e.kubeconfig, nodeName: `h${i}`, namespace: 'kube-system', log: quiet });
        modes.push(m);
        const { state, bootstrap } = await m.prepare(peer(i));
        assert.equal(state.decision, 'keep');
        assert.deepEqual(bootstrap.init, { mode: 'consensus', size: e.srv.store.list({ type: R('nodes') }).items.length });
        await m.peerSource({ setTargets: (_s, a) => targets.set(i, [...a]) }).start();
      }
      assert.deepEqual(targets.get(1), [ip(2), ip(3)]);
      // the ring formed on router 1: its reclaimer marks it in the record
      const rec = modes[0]!.reclaimer({ self: peer(1), ipam: { rmpeer: async () => ({ addresses: 0 }), ringReady: () => true }, mesh: { isReachable: () => true } }, { sweepMs: 3_600_000 });
      await rec.sweep();
      // a fourth host joins the cluster
      e.srv.store.create(R('nodes'), undefined, nodeObject('h4', [{ type: 'InternalIP', address: ip(4) }]));
      const m4 = await KubeMode.connect({ kubeconfig: e.kubeconfig, nodeName: 'h4', namespace: 'kube-system', log: quiet });
      modes.push(m4);
      const { bootstrap } = await m4.prepare(peer(4));
      assert.deepEqual(bootstrap.init, { mode: 'observer' });
      await m4.peerSource({ setTargets: (_s, a) => targets.set(4, [...a]) }).start();
      assert.deepEqual(targets.get(4), [ip(1), ip(2), ip(3)]);
      for (const i of [1, 2, 3]) await until(`router ${i} to see h4`, () => targets.get(i)!.includes(ip(4)));
      assert.equal(m4.status().source, 'kubernetes: 4 nodes');
      // the operator's --ipalloc-init wins over the derived mode
      assert.deepEqual((await m4.prepare(peer(4), { mode: 'consensus', size: 7 })).bootstrap.init, { mode: 'consensus', size: 7 });
    } finally {
      for (const m of modes) {
        await m.peerSource({ setTargets: () => undefined }).stop();
        await m.stop();
      }
    }
  });
});

test('connect fails at its deadline when the API server does not answer', async () => {
  const srv = await startApiServer();
  const url = srv.url;
  await srv.close();
  await withKube(async (e) => {
    await writeKubeconfig(e.kubeconfig, url);
    await assert.rejects(KubeMode.connect({ kubeconfig: e.kubeconfig, nodeName: 'h1', syncTimeoutMs: 300, log: quiet }), (err: KubeApiError) => err instanceof KubeApiError && /no list of nodes/.test(err.message));
  });
});
