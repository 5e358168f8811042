/**
 * The Kubernetes parts against the test API server: configuration, the resource watch
 * (reconnect, re-list, deadline), the peer source, the node condition, and the bootstrap rule.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, KubeApiError } from '../../src/common/errors';
import { startApiServer } from '../../src/kube/apiserver/server';
import { ObjectStore } from '../../src/kube/apiserver/store';
import { ipamInitFromCluster } from '../../src/kube/bootstrap';
import { KubeClient, kubeModeWanted, loadKubeConfig, nodeName, ownNamespace, SERVICE_ACCOUNT_DIR } from '../../src/kube/client';
import { CONDITION_REASON, CONDITION_TYPE, NodeCondition } from '../../src/kube/condition';
import { KubePeerSource, nodeAddress } from '../../src/kube/peers';
import { emptyRecord } from '../../src/kube/record';
import { ResourceWatch } from '../../src/kube/watch';
import { nodeObject, quiet, R, until, withKube } from '../helpers/kube';
import type { KubeObject } from '../../src/common/kube-object';

const internal = (address: string) => ({ type: 'InternalIP', address });
const external = (address: string) => ({ type: 'ExternalIP', address });

test('configuration: --kubeconfig wins; in a pod the service account; otherwise an error naming --kubeconfig', async () => {
  await withKube(async (e) => {
    const { origin, kc } = await loadKubeConfig({ kubeconfig: e.kubeconfig, env: {} });
    assert.equal(origin, 'kubeconfig');
    assert.equal(kc.getCurrentCluster()!.server, e.srv.url);
    await assert.rejects(loadKubeConfig({ kubeconfig: join(e.dir, 'missing') }), (err: ConfigError) => err instanceof ConfigError && err.field === '--kubeconfig');
    assert.equal(kubeModeWanted({ env: { KUBERNETES_SERVICE_HOST: '10.96.0.1' }, saPrefix: e.dir }), false, 'no token mounted yet');
    assert.equal(kubeModeWanted({ kubeconfig: e.kubeconfig, env: {} }), true);
    await assert.rejects(loadKubeConfig({ env: {}, saPrefix: e.dir }), (err: ConfigError) => err instanceof ConfigError && err.field === '--kubeconfig' && /KUBERNETES_SERVICE_HOST/.test(err.message));
    // a pod: the service host from the environment, the token file from the mounted account
    const sa = join(e.dir, SERVICE_ACCOUNT_DIR);
    mkdirSync(sa, { recursive: true });
    writeFileSync(join(sa, 'token'), 'tok');
    writeFileSync(join(sa, 'ca.crt'), '');
    writeFileSync(join(sa, 'namespace'), 'weft-ns\n');
    const before = process.env.KUBERNETES_SERVICE_HOST;
    assert.equal(kubeModeWanted({ env: { KUBERNETES_SERVICE_HOST: '10.96.0.1' }, saPrefix: e.dir }), true);
    assert.equal(kubeModeWanted({ env: {}, saPrefix: e.dir }), false);
    const pod = await loadKubeConfig({ env: { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' }, saPrefix: e.dir });
    assert.equal(pod.origin, 'in-cluster');
    assert.equal(pod.kc.getCurrentCluster()!.server, 'https://10.96.0.1:443');
    assert.equal(process.env.KUBERNETES_SERVICE_HOST, before, 'the process environment is left as it was');
    assert.equal(ownNamespace({}, e.dir), 'weft-ns');
    assert.equal(ownNamespace({ POD_NAMESPACE: 'other' }, e.dir), 'other');
    assert.equal(ownNamespace({}, join(e.dir, 'none')), 'kube-system');
  });
  assert.equal(nodeName('flag', { NODE_NAME: 'env' }), 'flag');
  assert.equal(nodeName(undefined, { NODE_NAME: 'env' }), 'env');
  assert.equal(nodeName(undefined, {}), (await import('node:os')).hostname());
});

test('client: a 409 on a stale update and a 404 arrive as KubeApiError with the status code', async () => {
  await withKube(async (e) => {
    const c = await e.client();
    const cm = await c.createConfigMap('kube-system', { metadata: { name: 'x' }, data: { a: '1' } });
    await c.replaceConfigMap('kube-system', { ...cm, data: { a: '2' } });
    await assert.rejects(c.replaceConfigMap('kube-system', { ...cm, data: { a: '3' } }), (err: KubeApiError) => err instanceof KubeApiError && err.code === 409 && err.reason === 'Conflict');
    await assert.rejects(c.getNode('nope'), (err: KubeApiError) => err instanceof KubeApiError && err.code === 404);
    assert.equal(await c.getConfigMap('kube-system', 'nope'), undefined);
  });
});

test('a request to an API server that does not answer fails at its deadline with KubeApiError', async () => {
  const net = await import('node:net');
  // accepts connections and never answers
  const sockets: import('node:net').Socket[] = [];
  const mute = net.createServer((s) => sockets.push(s));
  await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r));
  const port = (mute.address() as import('node:net').AddressInfo).port;
  try {
    await withKube(async (e) => {
      const { writeKubeconfig } = await import('../../src/kube/apiserver/kubeconfig');
      const path = join(e.dir, 'mute');
      await writeKubeconfig(path, `http://127.0.0.1:${port}`);
      const c = await KubeClient.create({ kubeconfig: path, requestTimeoutMs: 200 });
      await assert.rejects(c.getNode('n1'), (err: KubeApiError) => err instanceof KubeApiError && err.code === 0 && /within 200 ms/.test(err.message));
    });
  } finally {
    for (const s of sockets) s.destroy();
    mute.close();
  }
});

test('resource watch: follows changes, survives an API server restart, and lists again to catch up', async () => {
  const store = new ObjectStore();
  let srv = await startApiServer({ store });
  const port = Number(new URL(srv.url).port);
  try {
    await withKube(async (e) => {
      const { writeKubeconfig } = await import('../../src/kube/apiserver/kubeconfig');
      await writeKubeconfig(e.kubeconfig, srv.url);
      const w = new ResourceWatch({ client: await e.client(), log: quiet }, { resource: 'nodes', retryMinMs: 20, retryMaxMs: 200 });
      const seen: string[] = [];
      w.on('add', (n) => seen.push(`add ${n.metadata.name}`));
      w.on('delete', (n) => seen.push(`delete ${n.metadata.name}`));
      store.create(R('nodes'), undefined, nodeObject('a', [internal('10.0.0.1')]));
      await w.start();
      try {
        await w.waitSynced(10_000);
        store.create(R('nodes'), undefined, nodeObject('b', [internal('10.0.0.2')]));
        await until('b', () => w.get('b'));
        // the API server goes away; meanwhile a node leaves and one joins
        await srv.close();
        store.delete(R('nodes'), undefined, 'a');
        store.create(R('nodes'), undefined, nodeObject('c', [internal('10.0.0.3')]));
        store.compact();
        srv = await startApiServer({ store, port });
        await until('the cache to catch up', () => w.list().map((n) => n.metadata.name).sort().join() === 'b,c');
        assert.deepEqual(seen, ['add a', 'add b', 'delete a', 'add c']);
      } finally {
        await w.stop();
      }
    });
  } finally {
    await srv.close();
  }
});

test('resource watch: waiting for the first list has a deadline, and says why it failed', async () => {
  const srv = await startApiServer();
  const url = srv.url;
  await srv.close();
  await withKube(async (e) => {
    const { writeKubeconfig } = await import('../../src/kube/apiserver/kubeconfig');
    await writeKubeconfig(e.kubeconfig, url);
    const w = new ResourceWatch({ client: await e.client(), log: quiet }, { resource: 'nodes', retryMinMs: 20, retryMaxMs: 50 });
    await w.start();
    try {
      await until('a failure', () => w.lastError);
      await assert.rejects(w.waitSynced(100), (err: KubeApiError) => err instanceof KubeApiError && /no list of nodes/.test(err.message) && err.message.includes(w.lastError!));
    } finally {
      await w.stop();
    }
  });
});

test('node address: InternalIP first, ExternalIP when there is none, IPv4 only', () => {
  assert.equal(nodeAddress(nodeObject('a', [external('1.2.3.4'), internal('10.0.0.1')])), '10.0.0.1');
  assert.equal(nodeAddress(nodeObject('b', [external('1.2.3.4')])), '1.2.3.4');
  assert.equal(nodeAddress(nodeObject('c', [internal('fd00::1'), external('1.2.3.5')])), '1.2.3.5');
  assert.equal(nodeAddress(nodeObject('d', [internal('fd00::1')])), undefined);
  assert.equal(nodeAddress({ metadata: { name: 'e' } }), undefined);
});

test('peer source: the other Nodes are the targets, and joins and leaves follow the API', async () => {
  await withKube(async (e) => {
    const nodes = R('nodes');
    e.srv.store.create(nodes, undefined, nodeObject('self', [internal('10.0.0.1')]));
    e.srv.store.create(nodes, undefined, nodeObject('n2', [internal('10.0.0.2')]));
    e.srv.store.create(nodes, undefined, nodeObject('n3', [external('192.0.2.3')]));
    e.srv.store.create(nodes, undefined, nodeObject('v6', [internal('fd00::4')]));
    const calls: { source: string; addrs: readonly string[] }[] = [];
    const w = new ResourceWatch({ client: await e.client(), log: quiet }, { resource: 'nodes' });
    const src = new KubePeerSource({ targets: { setTargets: (source, addrs) => calls.push({ source, addrs: [...addrs] }) }, nodes: w, log: quiet }, 'self');
    await w.start();
    await src.start();
    try {
      const last = () => calls[calls.length - 1]?.addrs.join();
      await until('the first targets', () => last() === '10.0.0.2,192.0.2.3');
      assert.ok(calls.every((c) => c.source === 'kubernetes'));
      assert.equal(src.describe(), `kubernetes: ${e.srv.store.list({ type: nodes }).items.length} nodes`);
      e.srv.store.create(nodes, undefined, nodeObject('n5', [internal('10.0.0.5')]));
      await until('a join', () => last() === '10.0.0.2,10.0.0.5,192.0.2.3');
      e.srv.store.delete(nodes, undefined, 'n2');
      await until('a leave', () => last() === '10.0.0.5,192.0.2.3');
      // a Node whose address changes moves with it
      e.srv.store.patch(nodes, undefined, 'n5', 'strategic', { status: { addresses: [internal('10.0.0.55')] } }, true);
      await until('a move', () => last() === '10.0.0.55,192.0.2.3');
      assert.equal(src.describe(), `kubernetes: ${e.srv.store.list({ type: nodes }).items.length} nodes`);
    } finally {
      await src.stop();
      await w.stop();
    }
  });
});

test('node condition: NetworkUnavailable=False by strategic merge; the kubelet conditions stay; once only', async () => {
  await withKube(async (e) => {
    const nodes = R('nodes');
    const unavailable = { type: CONDITION_TYPE, status: 'True', reason: 'NoRouteCreated', lastTransitionTime: '2025-01-01T00:00:00Z' };
    e.srv.store.create(nodes, undefined, nodeObject('n1', [internal('10.0.0.1')], [unavailable]));
    const cond = new NodeCondition({ client: await e.client(), nodeName: 'n1', log: quiet });
    await cond.start();
    assert.equal(await cond.dataPathReady(), true);
    assert.equal(await cond.dataPathReady(), true);
    const conds = (e.srv.store.get(nodes, undefined, 'n1').status as { conditions: { type: string; status: string; reason: string; lastTransitionTime: string }[] }).conditions;
    assert.deepEqual(conds.map((c) => `${c.type}=${c.status}`), ['Ready=True', `${CONDITION_TYPE}=False`]);
    const mine = conds.find((c) => c.type === CONDITION_TYPE)!;
    assert.equal(mine.reason, CONDITION_REASON);
    assert.ok(Date.parse(mine.lastTransitionTime) > Date.parse(unavailable.lastTransitionTime));
    assert.equal(e.srv.requests.filter((r) => r === 'PATCH /api/v1/nodes/n1/status').length, 1);
    // a restarted router finds it done and patches nothing
    const again = new NodeCondition({ client: await e.client(), nodeName: 'n1', log: quiet });
    assert.equal(await again.dataPathReady(), true);
    assert.equal(e.srv.requests.filter((r) => r === 'PATCH /api/v1/nodes/n1/status').length, 1);
    await cond.stop();
  });
});

test('node condition: retries until its Node exists; stop ends the retries', async () => {
  await withKube(async (e) => {
    const cond = new NodeCondition({ client: await e.client(), nodeName: 'late', log: quiet }, { retryMinMs: 10, retryMaxMs: 40 });
    const done = cond.dataPathReady();
    await until('a failed attempt', () => e.srv.requests.includes('GET /api/v1/nodes/late'));
    e.srv.store.create(R('nodes'), undefined, nodeObject('late', [internal('10.0.0.9')]));
    assert.equal(await done, true);
    const never = new NodeCondition({ client: await e.client(), nodeName: 'never', log: quiet }, { retryMinMs: 10, retryMaxMs: 40 });
    const p = never.dataPathReady();
    await until('a failed attempt', () => e.srv.requests.includes('GET /api/v1/nodes/never'));
    await never.stop();
    assert.equal(await p, false);
  });
});

test('bootstrap: consensus over the listed Nodes on a first start; observer once the record marks a ring', () => {
  const nodes: KubeObject[] = ['a', 'b', 'c'].map((n) => nodeObject(n, [internal('10.0.0.1')]));
  const first = ipamInitFromCluster({ self: 'p1', nodes, record: emptyRecord() });
  assert.deepEqual(first.init, { mode: 'consensus', size: nodes.length });
  // a router registered before this one is no ring yet: still consensus (it needs our vote)
  const rec = emptyRecord();
  rec.peers.p0 = { node: 'a', since: '2025-01-01T00:00:00Z' };
  assert.equal(ipamInitFromCluster({ self: 'p1', nodes, record: rec }).init.mode, 'consensus');
  rec.ring = { by: 'p0', at: '2025-01-01T00:00:00Z' };
  assert.deepEqual(ipamInitFromCluster({ self: 'p1', nodes: nodes.slice(0, 1), record: rec }).init, { mode: 'observer' });
  // the router that marked it (restarting with its state lost) is no late joiner
  assert.equal(ipamInitFromCluster({ self: 'p0', nodes, record: rec }).init.mode, 'consensus');
  // a mark with nobody else left in the record: the ring is gone, start one
  delete rec.peers.p0;
  assert.equal(ipamInitFromCluster({ self: 'p1', nodes, record: rec }).init.mode, 'consensus');
  assert.deepEqual(ipamInitFromCluster({ self: 'p1', nodes: [], record: emptyRecord() }).init, { mode: 'consensus', size: 1 });
});

test('resource watch is generic: pods of one node by field selector, policies and namespaces across the cluster', async () => {
  await withKube(async (e) => {
    const s = e.srv.store;
    s.create(R('namespaces'), undefined, { metadata: { name: 'x', labels: { team: 'a' } } });
    const pod = (ns: string, name: string, node: string) => ({ metadata: { name, namespace: ns, labels: { app: name } }, spec: { nodeName: node, containers: [{ name: 'c', image: 'i', ports: [{ name: 'http', containerPort: 80 }] }] } });
    s.create(R('pods'), 'x', pod('x', 'a', 'h1'));
    s.create(R('pods'), 'default', pod('default', 'b', 'h2'));
    s.create(R('networkpolicies'), 'x', { metadata: { name: 'deny', namespace: 'x' }, spec: { podSelector: {}, policyTypes: ['Ingress'] } });
    const c = await e.client();
    const pods = new ResourceWatch({ client: c, log: quiet }, { resource: 'pods', fieldSelector: 'spec.nodeName=h1' });
    const pols = new ResourceWatch({ client: c, log: quiet }, { resource: 'networkpolicies' });
    const nss = new ResourceWatch({ client: c, log: quiet }, { resource: 'namespaces', labelSelector: 'team' });
    const all = [pods, pols, nss];
    for (const w of all) await w.start();
    try {
      for (const w of all) await w.waitSynced(10_000);
      assert.deepEqual(pods.list().map((p) => `${p.metadata.namespace}/${p.metadata.name}`), ['x/a']);
      // plain JSON in wire names, as a watch event would carry it
      assert.equal((pods.get('a', 'x')!.spec as { containers: { ports: { containerPort: number }[] }[] }).containers[0]!.ports[0]!.containerPort, 80);
      assert.equal(typeof pods.get('a', 'x')!.metadata.creationTimestamp, 'string');
      assert.deepEqual(pols.list().map((p) => p.metadata.name), ['deny']);
      assert.deepEqual(nss.list().map((n) => n.metadata.name), ['x']);
      s.create(R('pods'), 'default', pod('default', 'c', 'h1'));
      s.delete(R('networkpolicies'), 'x', 'deny');
      await until('the new pod', () => pods.get('c', 'default'));
      await until('the policy gone', () => pols.list().length === 0);
      assert.equal(pods.list().length, 2);
    } finally {
      for (const w of all) await w.stop();
    }
  });
});
