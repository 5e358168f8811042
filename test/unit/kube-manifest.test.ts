/**
 * daemonset/weft.yaml: every object is validated against the Kubernetes OpenAPI schemas
 * (kubernetes-models), a malformed object is caught (broken on purpose, in memory), and the
 * manifest agrees with the code: RBAC grants what the Kubernetes parts call, the probes hit
 * the router's metrics address, settings come from the ConfigMap as WEFT_* variables.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROUTER_DEFAULTS } from '../../src/router/options';
import { RECORD_NAME } from '../../src/kube/record';
import { POLICY_RESOURCES } from '../../src/policy/source';
import { loadAll } from 'js-yaml';
import { loadK8s } from '../../src/kube/load';

const ROOT = join(__dirname, '../..');

interface Obj {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  [k: string]: unknown;
}

/** The objects as written (a plain YAML parser: nothing dropped or renamed before validation). */
async function manifest(): Promise<Obj[]> {
  return loadAll(readFileSync(join(ROOT, 'daemonset/weft.yaml'), 'utf8')) as Obj[];
}

type Attr = { baseName: string; type: string };
type Models = Record<string, { getAttributeTypeMap?: () => Attr[] } | undefined>;

/**
 * Fields the API does not know, found with @kubernetes/client-node's generated models (made
 * from the same OpenAPI document): the schemas allow unknown fields, the API server's strict
 * field validation (kubectl's default) refuses them, so a misspelled field must fail here too.
 */
function unknownFields(models: Models, v: unknown, type: string, path: string): string[] {
  const arr = /^Array<(.+)>$/.exec(type);
  if (arr) return Array.isArray(v) ? v.flatMap((x, i) => unknownFields(models, x, arr[1]!, `${path}[${i}]`)) : [];
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) return v && typeof v === 'object' ? Object.entries(v).flatMap(([k, x]) => unknownFields(models, x, map[1]!, `${path}.${k}`)) : [];
  const attrs = models[type]?.getAttributeTypeMap?.();
  if (!attrs || !v || typeof v !== 'object') return [];
  return Object.entries(v).flatMap(([k, x]) => {
    const a = attrs.find((t) => t.baseName === k);
    return a ? unknownFields(models, x, a.type, `${path}.${k}`) : [`${path}.${k}`];
  });
}

/** Validates one object with the kubernetes-models class for its apiVersion and kind, then for unknown fields; throws what is wrong. */
async function validate(o: Obj): Promise<void> {
  const mod = (await import(`kubernetes-models/${o.apiVersion}`)) as Record<string, new (d: unknown) => { validate(): void }>;
  const Model = mod[o.kind];
  if (!Model) throw new Error(`no schema for ${o.apiVersion} ${o.kind}`);
  new Model(o).validate();
  const version = o.apiVersion.split('/').pop()!;
  const type = `${version[0]!.toUpperCase()}${version.slice(1)}${o.kind}`;
  const models = (await loadK8s()) as unknown as Models;
  if (!models[type]?.getAttributeTypeMap) throw new Error(`no model ${type}`);
  const unknown = unknownFields(models, o, type, o.kind);
  if (unknown.length) throw new Error(`unknown fields: ${unknown.join(', ')}`);
}

function find(objs: Obj[], kind: string, name?: string): Obj {
  const o = objs.find((x) => x.kind === kind && (name === undefined || x.metadata.name === name));
  assert.ok(o, `the manifest has a ${kind}${name ? ` ${name}` : ''}`);
  return o;
}

/* eslint-disable @typescript-eslint/no-explicit-any */
const podSpec = (objs: Obj[]): any => (find(objs, 'DaemonSet') as any).spec.template.spec;
const router = (objs: Obj[]): any => podSpec(objs).containers.find((c: any) => c.name === 'router');

test('every object of the manifest is valid against the Kubernetes schemas', async () => {
  const objs = await manifest();
  const kinds = objs.map((o) => o.kind).sort();
  assert.deepEqual(kinds, ['ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'DaemonSet', 'Role', 'RoleBinding', 'ServiceAccount']);
  for (const o of objs) await validate(o);
});

test('the schema check catches a malformed object (each broken on purpose)', async () => {
  const breakages: [string, (objs: Obj[]) => void][] = [
    ['a port that is not a number', (objs) => (router(objs).readinessProbe.httpGet.port = { not: 'a port' })],
    ['a DaemonSet without its selector', (objs) => delete (find(objs, 'DaemonSet') as any).spec.selector],
    ['a container without an image name', (objs) => (router(objs).name = 42)],
    ['a ClusterRole rule whose verbs are not a list', (objs) => ((find(objs, 'ClusterRole') as any).rules[0].verbs = 'get')],
    ['a binding without its roleRef', (objs) => delete (find(objs, 'ClusterRoleBinding') as any).roleRef],
    ['a ConfigMap value that is not a string', (objs) => ((find(objs, 'ConfigMap') as any).data.WEFT_LOG_LEVEL = 3)],
    ['a misspelled field', (objs) => (router(objs).imagePullPolicyy = 'Always')],
    ['a misspelled field in a list of a map', (objs) => ((find(objs, 'Role') as any).rules[1].resourceName = ['x'])],
  ];
  for (const [what, breakIt] of breakages) {
    const objs = await manifest();
    breakIt(objs);
    let failed = 0;
    for (const o of objs) await validate(o).catch(() => failed++);
    assert.equal(failed, 1, `${what}: exactly the broken object fails`);
  }
});

test('RBAC grants exactly what the Kubernetes parts use, bound to the DaemonSet service account', async () => {
  const objs = await manifest();
  const rules = (kind: string) =>
    ((find(objs, kind) as any).rules as { apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] }[]).flatMap((r) =>
      r.resources.flatMap((res) => r.verbs.map((v) => `${r.apiGroups[0] || 'core'}/${res}:${v}${r.resourceNames ? `@${r.resourceNames.join()}` : ''}`)),
    );
  // the NetworkPolicy part lists and watches its resources, cluster-wide, and nothing more
  const group = (r: string) => (r === 'networkpolicies' ? 'networking.k8s.io' : 'core');
  const policy = POLICY_RESOURCES.flatMap((r) => [`${group(r)}/${r}:list`, `${group(r)}/${r}:watch`]);
  assert.deepEqual(rules('ClusterRole').sort(), ['core/nodes/status:patch', 'core/nodes:get', 'core/nodes:list', 'core/nodes:watch', ...policy].sort());
  assert.deepEqual(rules('Role').sort(), ['core/configmaps:create', `core/configmaps:get@${RECORD_NAME}`, `core/configmaps:update@${RECORD_NAME}`]);
  const sa = find(objs, 'ServiceAccount');
  assert.equal(podSpec(objs).serviceAccountName, sa.metadata.name);
  for (const [binding, role] of [['ClusterRoleBinding', 'ClusterRole'], ['RoleBinding', 'Role']] as const) {
    const b = find(objs, binding) as any;
    assert.equal(b.roleRef.kind, role);
    assert.equal(b.roleRef.name, find(objs, role).metadata.name);
    assert.deepEqual(b.subjects, [{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: sa.metadata.namespace }]);
  }
  // the record lives in the DaemonSet's namespace, where the Role grants access to it
  assert.equal(find(objs, 'Role').metadata.namespace, find(objs, 'DaemonSet').metadata.namespace);
});

test('the DaemonSet: host network, capabilities, probes on the metrics address, settings as WEFT_* variables, a rolling update', async () => {
  const objs = await manifest();
  const spec = podSpec(objs);
  const c = router(objs);
  assert.equal(spec.hostNetwork, true);
  assert.equal(spec.priorityClassName, 'system-node-critical');
  assert.deepEqual(spec.tolerations, [{ operator: 'Exists' }]);
  assert.deepEqual(c.securityContext.capabilities.add.sort(), ['NET_ADMIN', 'NET_RAW']);
  assert.ok(spec.initContainers.some((i: any) => i.command.includes('install-cni')));
  const [host, port] = ROUTER_DEFAULTS.metricsAddr.split(':');
  for (const [probe, path] of [['readinessProbe', '/readyz'], ['livenessProbe', '/healthz']]) {
    assert.deepEqual(c[probe].httpGet, { host, path, port: Number(port) });
  }
  const envNames = c.env.map((e: any) => e.name);
  for (const n of ['NODE_NAME', 'POD_NAMESPACE']) assert.ok(envNames.includes(n), n);
  const cm = find(objs, 'ConfigMap') as any;
  assert.equal(c.envFrom.find((e: any) => e.configMapRef).configMapRef.name, cm.metadata.name);
  for (const k of Object.keys(cm.data)) assert.match(k, /^WEFT_[A-Z0-9_]+$/);
  assert.equal(c.envFrom.find((e: any) => e.secretRef).secretRef.optional, true);
  const ds = find(objs, 'DaemonSet') as any;
  assert.deepEqual(ds.spec.updateStrategy, { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1, maxSurge: 0 } });
  assert.deepEqual(ds.spec.selector.matchLabels, ds.spec.template.metadata.labels);
  const mounts = new Map(c.volumeMounts.map((m: any) => [m.mountPath, m.name]));
  const volumes = new Map(spec.volumes.map((v: any) => [v.name, v.hostPath?.path]));
  assert.equal(volumes.get(mounts.get(ROUTER_DEFAULTS.stateDir)), ROUTER_DEFAULTS.stateDir);
  assert.equal(volumes.get(mounts.get('/run/weft')), '/run/weft');
});
