/** Manifests for the test API server (the sandbox's --manifests, apply and delete): reading, checks, order. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../../src/common/errors';
import { applyManifests, deleteManifests, parseManifest, readManifests, servedPorts } from '../../src/kube/manifests';
import { startApiServer } from '../../src/kube/apiserver/server';
import { R } from '../helpers/kube';

const YAML = `# the upstream layout, a piece of it
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: { name: deny-all, namespace: x }
spec: { podSelector: {} }
---
apiVersion: v1
kind: Pod
metadata: { name: a, namespace: x, labels: { pod: a } }
spec:
  containers:
    - name: c
      ports:
        - { name: serve-80-tcp, containerPort: 80 }
        - { name: serve-80-udp, containerPort: 80, protocol: UDP }
        - { name: serve-81-sctp, containerPort: 81, protocol: SCTP }
    - name: d
      ports: [{ containerPort: 80 }]
---
apiVersion: v1
kind: Namespace
metadata: { name: x, labels: { ns: x } }
`;

const fieldOf = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    return e.field;
  }
  assert.fail('no error');
};

test('YAML streams, JSON lists and kind: List; a pod serves what its containers declare', () => {
  const objs = parseManifest(YAML, 'm.yaml');
  assert.deepEqual(objs.map((o) => `${o.object.kind}/${o.object.metadata.name} ${o.source}`), ['NetworkPolicy/deny-all m.yaml#1', 'Pod/a m.yaml#2', 'Namespace/x m.yaml#3']);
  assert.deepEqual(servedPorts(objs[1]!.object), [
    { protocol: 'tcp', port: 80 },
    { protocol: 'udp', port: 80 },
    { protocol: 'sctp', port: 81 },
  ]);
  const list = JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'y' } }] });
  assert.deepEqual(parseManifest(list, 'l.json').map((o) => o.object.metadata.name), ['y']);
  const arr = JSON.stringify([{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'z' } }]);
  assert.deepEqual(parseManifest(arr, 'a.json').map((o) => o.source), ['a.json[0]']);
});

test('what the server cannot place is refused, naming the file, the document and the field', () => {
  assert.equal(fieldOf(() => parseManifest('apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: d }\n', 'd.yaml')), 'd.yaml: kind');
  assert.equal(fieldOf(() => parseManifest('kind: NetworkPolicy\napiVersion: v1\nmetadata: { name: p }\n', 'p.yaml')), 'p.yaml: apiVersion');
  assert.equal(fieldOf(() => parseManifest(`${YAML}---\napiVersion: v1\nkind: Pod\nmetadata: {}\n`, 'm.yaml')), 'm.yaml#4: metadata.name');
  assert.equal(fieldOf(() => parseManifest('a: [', 'bad.yaml')), 'bad.yaml');
  assert.equal(fieldOf(() => parseManifest('{', 'bad.json')), 'bad.json');
});

test('a directory is applied Namespaces first and deleted Namespaces last, through the admin socket', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-manifests-'));
  const srv = await startApiServer({ socket: join(dir, 'api.sock') });
  try {
    writeFileSync(join(dir, '1-policy.yaml'), YAML);
    writeFileSync(join(dir, '2-more.json'), JSON.stringify({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'b', namespace: 'x' }, spec: { containers: [{ name: 'c' }] } }));
    writeFileSync(join(dir, 'notes.txt'), 'not a manifest');
    const objs = await readManifests(dir);
    assert.equal(objs.length, 4);
    const t = { socket: srv.socket! };
    const stored = await applyManifests(t, objs);
    assert.equal(stored[0]!.kind, 'Namespace', 'the namespace first, so the rest has somewhere to go');
    assert.deepEqual(srv.store.list({ type: R('pods'), namespace: 'x' }).items.map((p) => p.metadata.name).sort(), ['a', 'b']);
    // applied again: replaced, not refused
    await applyManifests(t, objs);
    assert.equal(await deleteManifests(t, objs), 4);
    assert.equal(srv.store.list({ type: R('namespaces') }).items.some((n) => n.metadata.name === 'x'), false);
    assert.equal(await deleteManifests(t, objs), 0, 'already gone is fine');
    await assert.rejects(readManifests(join(dir, 'missing')), (e: ConfigError) => e instanceof ConfigError && /does not exist/.test(e.message));
  } finally {
    await srv.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
