/**
 * The test API server's protocol, driven by @kubernetes/client-node itself (its generated
 * API classes, its Watch and its informer), so the server is checked against the client the
 * routers use, not against our own reading of the documentation alone.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type * as K8sNs from '@kubernetes/client-node';
import { startApiServer, type RunningApiServer } from '../../src/kube/apiserver/server';
import { writeKubeconfig } from '../../src/kube/apiserver/kubeconfig';
import { resourceByPlural } from '../../src/kube/apiserver/types';
import { loadK8s, type K8s } from '../../src/kube/load';
import type { KubeObject } from '../../src/common/kube-object';

const R = (p: string) => resourceByPlural(p)!;

interface Env {
  srv: RunningApiServer;
  k8s: K8s;
  kc: K8sNs.KubeConfig;
  core: K8sNs.CoreV1Api;
  dir: string;
}

async function withServer(fn: (e: Env) => Promise<void>): Promise<void> {
  const srv = await startApiServer();
  const dir = mkdtempSync(join(tmpdir(), 'weft-kube-'));
  try {
    const k8s = await loadK8s();
    const path = join(dir, 'kubeconfig');
    await writeKubeconfig(path, srv.url);
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(path);
    await fn({ srv, k8s, kc, core: kc.makeApiClient(k8s.CoreV1Api), dir });
  } finally {
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function node(name: string, ip: string, labels: Record<string, string> = {}): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels },
    status: {
      addresses: [
        { type: 'InternalIP', address: ip },
        { type: 'Hostname', address: name },
      ],
      conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', lastTransitionTime: '2025-01-01T00:00:00Z' }],
    },
  };
}

/** Waits (bounded) until `cond` holds, polling; returns its last value. */
async function until<T>(what: string, cond: () => T | undefined | false, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = cond();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Collects the events of one raw watch until stopped. */
async function rawWatch(e: Env, path: string, rv: string | undefined, q: Record<string, string> = {}) {
  const events: { type: string; object: KubeObject }[] = [];
  let done: unknown = 'open';
  const ctl = await new e.k8s.Watch(e.kc).watch(
    path,
    { ...q, ...(rv !== undefined ? { resourceVersion: rv } : {}) },
    (type, object) => events.push({ type, object }),
    (err) => (done = err ?? null),
  );
  return { events, ctl, ended: () => done !== 'open' };
}

test('list gives the cluster resourceVersion; a watch resumes after it and sees only later changes', async () => {
  await withServer(async (e) => {
    await e.core.createNode({ body: node('n1', '10.0.0.1') as K8sNs.V1Node });
    const list = await e.core.listNode();
    const rv = list.metadata!.resourceVersion!;
    assert.equal(rv, String(e.srv.store.resourceVersion));
    assert.deepEqual(list.items.map((n) => n.metadata!.name), ['n1']);
    await e.core.createNode({ body: node('n2', '10.0.0.2') as K8sNs.V1Node });
    const w = await rawWatch(e, '/api/v1/nodes', rv);
    await e.core.deleteNode({ name: 'n1' });
    await until('two events', () => w.events.length >= 2);
    w.ctl.abort();
    assert.deepEqual(
      w.events.map((x) => `${x.type} ${x.object.metadata.name}`),
      ['ADDED n2', 'DELETED n1'],
    );
    // every event carries a newer resourceVersion than the list
    for (const x of w.events) assert.ok(Number(x.object.metadata.resourceVersion) > Number(rv));
  });
});

test('a watch from a compacted resourceVersion gets an ERROR event with a 410 Status, then the stream ends', async () => {
  await withServer(async (e) => {
    await e.core.createNode({ body: node('n1', '10.0.0.1') as K8sNs.V1Node });
    const old = String(e.srv.store.resourceVersion);
    await e.core.createNode({ body: node('n2', '10.0.0.2') as K8sNs.V1Node });
    e.srv.store.compact();
    const w = await rawWatch(e, '/api/v1/nodes', old);
    await until('the stream to end', () => w.ended());
    assert.equal(w.events.length, 1);
    assert.equal(w.events[0]!.type, 'ERROR');
    assert.equal(w.events[0]!.object.kind, 'Status');
    assert.equal((w.events[0]!.object as unknown as { code: number }).code, 410);
    assert.equal((w.events[0]!.object as unknown as { reason: string }).reason, 'Expired');
    // a resourceVersion at or after the compaction still resumes
    const fresh = await rawWatch(e, '/api/v1/nodes', String(e.srv.store.resourceVersion));
    await e.core.deleteNode({ name: 'n2' });
    await until('the delete', () => fresh.events.length >= 1);
    fresh.ctl.abort();
    assert.equal(fresh.events[0]!.type, 'DELETED');
  });
});

test('the informer lists again after 410 and its cache converges, deletions included', async () => {
  await withServer(async (e) => {
    for (const i of [1, 2, 3]) await e.core.createNode({ body: node(`n${i}`, `10.0.0.${i}`) as K8sNs.V1Node });
    const inf = e.k8s.makeInformer(e.kc, '/api/v1/nodes', () => e.core.listNode());
    const deleted: string[] = [];
    inf.on('delete', (n) => deleted.push(n.metadata!.name!));
    await inf.start();
    try {
      await until('three nodes', () => inf.list().length === 3);
      // while the informer is away: changes, then the history is gone
      const listsBefore = e.srv.requests.filter((r) => r === 'GET /api/v1/nodes').length;
      e.srv.dropWatches();
      e.srv.store.delete(R('nodes'), undefined, 'n2');
      e.srv.store.create(R('nodes'), undefined, node('n4', '10.0.0.4'));
      e.srv.store.compact();
      await until('the cache to converge', () => inf.list().map((n) => n.metadata!.name).sort().join() === 'n1,n3,n4' && deleted.includes('n2'));
      // it had to list again: the watch from its old resourceVersion got 410
      assert.equal(e.srv.requests.filter((r) => r === 'GET /api/v1/nodes').length, listsBefore + 1);
    } finally {
      await inf.stop();
    }
  });
});

test('an update with a stale resourceVersion gets 409 Conflict; one with the current version succeeds', async () => {
  await withServer(async (e) => {
    const cm = await e.core.createNamespacedConfigMap({ namespace: 'kube-system', body: { metadata: { name: 'rec' }, data: { a: '1' } } });
    const stale = structuredClone(cm);
    const fresh = await e.core.replaceNamespacedConfigMap({ namespace: 'kube-system', name: 'rec', body: { ...cm, data: { a: '2' } } });
    assert.notEqual(fresh.metadata!.resourceVersion, cm.metadata!.resourceVersion);
    await assert.rejects(
      e.core.replaceNamespacedConfigMap({ namespace: 'kube-system', name: 'rec', body: { ...stale, data: { a: '3' } } }),
      (err: K8sNs.ApiException<string>) => err.code === 409 && JSON.parse(err.body).reason === 'Conflict',
    );
    assert.equal((await e.core.readNamespacedConfigMap({ namespace: 'kube-system', name: 'rec' })).data!.a, '2');
  });
});

test('create of an existing name is 409 AlreadyExists; a missing object is 404 NotFound as a Status', async () => {
  await withServer(async (e) => {
    await e.core.createNode({ body: node('n1', '10.0.0.1') as K8sNs.V1Node });
    await assert.rejects(e.core.createNode({ body: node('n1', '10.0.0.9') as K8sNs.V1Node }), (err: K8sNs.ApiException<string>) => {
      const s = JSON.parse(err.body);
      return err.code === 409 && s.kind === 'Status' && s.reason === 'AlreadyExists' && s.details.name === 'n1';
    });
    await assert.rejects(e.core.readNode({ name: 'nope' }), (err: K8sNs.ApiException<string>) => {
      const s = JSON.parse(err.body);
      return err.code === 404 && s.kind === 'Status' && s.status === 'Failure' && s.reason === 'NotFound' && s.message === 'nodes "nope" not found';
    });
  });
});

test('PATCH of nodes/NAME/status: strategic merge merges conditions by type; merge patch replaces the list', async () => {
  await withServer(async (e) => {
    await e.core.createNode({ body: node('n1', '10.0.0.1') as K8sNs.V1Node });
    const smp = e.k8s.setHeaderOptions('Content-Type', e.k8s.PatchStrategy.StrategicMergePatch);
    const cond = (status: string) => ({ status: { conditions: [{ type: 'NetworkUnavailable', status, reason: 'WeftIsUp', message: 'm', lastTransitionTime: new Date().toISOString() }] } });
    await e.core.patchNodeStatus({ name: 'n1', body: cond('True') }, smp);
    const after = await e.core.patchNodeStatus({ name: 'n1', body: cond('False') }, smp);
    const types = after.status!.conditions!.map((c) => `${c.type}=${c.status}`);
    assert.deepEqual(types, ['Ready=True', 'NetworkUnavailable=False']);
    // the addresses were not touched by a status patch of conditions
    assert.equal(after.status!.addresses!.length, 2);
    // a merge patch replaces the whole list, as RFC 7386 says
    const mp = e.k8s.setHeaderOptions('Content-Type', e.k8s.PatchStrategy.MergePatch);
    const replaced = await e.core.patchNodeStatus({ name: 'n1', body: cond('True') }, mp);
    assert.deepEqual(replaced.status!.conditions!.map((c) => c.type), ['NetworkUnavailable']);
    // and a JSON patch edits by pointer
    const jp = e.k8s.setHeaderOptions('Content-Type', e.k8s.PatchStrategy.JsonPatch);
    const labelled = await e.core.patchNode({ name: 'n1', body: [{ op: 'add', path: '/metadata/labels/zone', value: 'a' }] }, jp);
    assert.equal(labelled.metadata!.labels!.zone, 'a');
  });
});

test('a status change through the main resource is ignored; spec changes through /status are too', async () => {
  await withServer(async (e) => {
    const n = await e.core.createNode({ body: node('n1', '10.0.0.1') as K8sNs.V1Node });
    const put = await e.core.replaceNode({ name: 'n1', body: { ...n, spec: { podCIDR: '10.1.0.0/24' }, status: { addresses: [] } } });
    assert.equal(put.spec!.podCIDR, '10.1.0.0/24');
    assert.equal(put.status!.addresses!.length, 2);
    const st = await e.core.replaceNodeStatus({ name: 'n1', body: { ...put, spec: { podCIDR: '10.9.0.0/24' }, status: { addresses: [] } } });
    assert.equal(st.spec!.podCIDR, '10.1.0.0/24');
    assert.equal(st.status!.addresses!.length, 0);
  });
});

test('label and field selectors filter lists and watches; an object leaving a selection is DELETED for that watch', async () => {
  await withServer(async (e) => {
    await e.core.createNode({ body: node('a', '10.0.0.1', { role: 'worker', zone: 'x' }) as K8sNs.V1Node });
    await e.core.createNode({ body: node('b', '10.0.0.2', { role: 'worker', zone: 'y' }) as K8sNs.V1Node });
    await e.core.createNode({ body: node('c', '10.0.0.3', { role: 'master' }) as K8sNs.V1Node });
    const names = async (labelSelector?: string, fieldSelector?: string) => (await e.core.listNode({ labelSelector, fieldSelector })).items.map((n) => n.metadata!.name).join();
    assert.equal(await names('role=worker'), 'a,b');
    assert.equal(await names('role==worker,zone!=x'), 'b');
    assert.equal(await names('zone in (x, y)'), 'a,b');
    assert.equal(await names('role notin (worker)'), 'c');
    assert.equal(await names('zone'), 'a,b');
    assert.equal(await names('!zone'), 'c');
    assert.equal(await names(undefined, 'metadata.name=b'), 'b');
    await assert.rejects(e.core.listNode({ labelSelector: 'role in worker' }), (err: K8sNs.ApiException<string>) => err.code === 400);
    const w = await rawWatch(e, '/api/v1/nodes', String(e.srv.store.resourceVersion), { labelSelector: 'role=worker' });
    const jp = e.k8s.setHeaderOptions('Content-Type', e.k8s.PatchStrategy.MergePatch);
    await e.core.patchNode({ name: 'a', body: { metadata: { labels: { role: 'gone' } } } }, jp);
    await e.core.patchNode({ name: 'c', body: { metadata: { labels: { role: 'worker' } } } }, jp);
    await e.core.patchNode({ name: 'b', body: { metadata: { labels: { extra: '1' } } } }, jp);
    await until('three events', () => w.events.length >= 3);
    w.ctl.abort();
    assert.deepEqual(
      w.events.map((x) => `${x.type} ${x.object.metadata.name}`),
      ['DELETED a', 'ADDED c', 'MODIFIED b'],
    );
  });
});

test('namespaced paths: a namespace must exist, lists span namespaces, deleting a namespace deletes its objects', async () => {
  await withServer(async (e) => {
    const pod = (name: string) => ({ metadata: { name, labels: { app: name } }, spec: { containers: [{ name: 'c', image: 'busybox' }] } });
    await assert.rejects(e.core.createNamespacedPod({ namespace: 'x', body: pod('a') }), (err: K8sNs.ApiException<string>) => err.code === 404 && JSON.parse(err.body).details.kind === 'namespaces');
    await e.core.createNamespace({ body: { metadata: { name: 'x' } } });
    await e.core.createNamespace({ body: { metadata: { name: 'y' } } });
    await e.core.createNamespacedPod({ namespace: 'x', body: pod('a') });
    await e.core.createNamespacedPod({ namespace: 'y', body: pod('a') });
    await e.core.createNamespacedPod({ namespace: 'y', body: pod('b') });
    const all = await e.core.listPodForAllNamespaces();
    assert.deepEqual(all.items.map((p) => `${p.metadata!.namespace}/${p.metadata!.name}`), ['x/a', 'y/a', 'y/b']);
    assert.equal((await e.core.listNamespacedPod({ namespace: 'y' })).items.length, 2);
    const net = e.kc.makeApiClient(e.k8s.NetworkingV1Api);
    await net.createNamespacedNetworkPolicy({ namespace: 'y', body: { metadata: { name: 'deny' }, spec: { podSelector: {}, policyTypes: ['Ingress'] } } });
    assert.equal((await net.listNetworkPolicyForAllNamespaces()).items[0]!.metadata!.namespace, 'y');
    await e.core.deleteNamespace({ name: 'y' });
    assert.deepEqual((await e.core.listPodForAllNamespaces()).items.map((p) => p.metadata!.namespace), ['x']);
    assert.equal((await net.listNetworkPolicyForAllNamespaces()).items.length, 0);
  });
});

test('an unauthenticated request is refused when the server wants a token; the kubeconfig carries it', async () => {
  const srv = await startApiServer({ token: 'sesame' });
  const dir = mkdtempSync(join(tmpdir(), 'weft-kube-'));
  try {
    const k8s = await loadK8s();
    const kc = new k8s.KubeConfig();
    await writeKubeconfig(join(dir, 'ok'), srv.url, { token: 'sesame' });
    kc.loadFromFile(join(dir, 'ok'));
    assert.equal((await kc.makeApiClient(k8s.CoreV1Api).listNamespace()).items.length, 4);
    const bad = new k8s.KubeConfig();
    await writeKubeconfig(join(dir, 'bad'), srv.url);
    bad.loadFromFile(join(dir, 'bad'));
    await assert.rejects(bad.makeApiClient(k8s.CoreV1Api).listNamespace(), (err: K8sNs.ApiException<string>) => err.code === 401);
  } finally {
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the server also listens on a unix socket; the admin client applies and deletes objects through it, TCP clients see them', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-kube-'));
  const socket = join(dir, 'api.sock');
  const srv = await startApiServer({ port: 0, socket });
  try {
    const { applyObject, deleteObject, apiRequest } = await import('../../src/kube/apiserver/admin');
    const { nodeFor } = await import('../../src/kube/apiserver/cli');
    const { KubeApiError } = await import('../../src/common/errors');
    const k8s = await loadK8s();
    await writeKubeconfig(join(dir, 'kc'), srv.url);
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(join(dir, 'kc'));
    const core = kc.makeApiClient(k8s.CoreV1Api);
    const t = { socket };
    const created = await applyObject(t, nodeFor('h1', '172.30.0.11'));
    assert.equal((await core.readNode({ name: 'h1' })).status!.addresses![0]!.address, '172.30.0.11');
    // applying again replaces
    const replaced = await applyObject(t, nodeFor('h1', '172.30.0.21'));
    assert.ok(Number(replaced.metadata.resourceVersion) > Number(created.metadata.resourceVersion));
    assert.equal((await core.readNode({ name: 'h1' })).status!.addresses![0]!.address, '172.30.0.21');
    const cm = { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'c', namespace: 'kube-system' }, data: { k: 'v' } };
    await applyObject(t, cm);
    assert.equal((await core.readNamespacedConfigMap({ namespace: 'kube-system', name: 'c' })).data!.k, 'v');
    assert.equal(await deleteObject(t, nodeFor('h1', '')), true);
    assert.equal(await deleteObject(t, nodeFor('h1', '')), false);
    await assert.rejects(apiRequest(t, 'GET', '/api/v1/nodes/h1'), (err: InstanceType<typeof KubeApiError>) => err.code === 404 && /not found/.test(err.message));
    await assert.rejects(applyObject(t, { apiVersion: 'v2', kind: 'Node', metadata: { name: 'x' } }), /not served/);
  } finally {
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
