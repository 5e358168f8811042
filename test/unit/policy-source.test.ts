/**
 * The policy part's sources: watches of Pods, Namespaces and NetworkPolicies (stand-ins, and
 * the real ResourceWatch against the test API server), this host's attachments, and the
 * router's policy part around the engine (drops as deltas, the local view from IPAM records).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { ResourceWatch } from '../../src/kube/watch';
import type { PolicyInput } from '../../src/policy/model';
import { PolicySource, POLICY_RESOURCES, type PolicyResource, type WatchedObjects } from '../../src/policy/source';
import { localPods, nodeAddresses, RouterPolicy } from '../../src/router/policy';
import type { AllocationRecord } from '../../src/common/api';
import type { KubeClient } from '../../src/kube/client';
import type { Nft } from '../../src/sys/nft';
import { memoryLogger } from '../helpers/policy-lab';
import { quiet, R, until, withKube } from '../helpers/kube';
import type { KubeObject } from '../../src/common/kube-object';

/** A watch whose cache and events the test drives. */
class FakeWatch extends EventEmitter {
  synced = false;
  lastError: string | undefined;
  readonly objs = new Map<string, KubeObject>();
  started = 0;
  async start() {
    this.started++;
  }
  async stop() {}
  list() {
    return [...this.objs.values()];
  }
  put(o: KubeObject) {
    const k = `${o.metadata.namespace}/${o.metadata.name}`;
    const had = this.objs.has(k);
    this.objs.set(k, o);
    this.emit(had ? 'update' : 'add', o);
  }
  del(o: KubeObject) {
    this.objs.delete(`${o.metadata.namespace}/${o.metadata.name}`);
    this.emit('delete', o);
  }
  sync() {
    this.synced = true;
    this.emit('synced');
  }
}

/** Records every input; answers after a tick, or refuses while `refuse` > 0. */
class FakeEngine {
  inputs: PolicyInput[] = [];
  refuse = 0;
  async update(input: PolicyInput) {
    await new Promise((r) => setImmediate(r));
    if (this.refuse > 0) {
      this.refuse--;
      throw new Error('nft: Could not process rule');
    }
    this.inputs.push(input);
  }
  get last() {
    return this.inputs.at(-1);
  }
}

let rv = 0;
const pod = (ns: string, name: string, ip: string, labels: Record<string, string> = {}): KubeObject => ({
  metadata: { namespace: ns, name, labels, resourceVersion: String(++rv) },
  spec: { containers: [{ name: 'c' }] },
  status: { phase: 'Running', podIP: ip },
});
const nsObj = (name: string): KubeObject => ({ metadata: { name, resourceVersion: String(++rv) } });
const policy = (ns: string, name: string, spec: Record<string, unknown>): KubeObject => ({ metadata: { namespace: ns, name, resourceVersion: String(++rv) }, spec });

function rig(init: { localPollMs?: number } = {}) {
  const w = { pods: new FakeWatch(), namespaces: new FakeWatch(), networkpolicies: new FakeWatch() };
  const engine = new FakeEngine();
  const log = memoryLogger();
  const local = { pods: [{ ip: '10.0.0.2', namespace: 'x', name: 'a' }], node: ['10.0.0.1'] };
  const seconds: number[] = [];
  const source = new PolicySource(
    {
      watches: w as unknown as Record<PolicyResource, WatchedObjects>,
      engine,
      local: () => local.pods,
      nodeAddresses: () => local.node,
      log,
      enforced: (s) => seconds.push(s),
    },
    { exempt: ['10.96.0.0/12'], localPollMs: init.localPollMs ?? 3_600_000, coalesceMs: 5, retryMinMs: 20 },
  );
  return { w, engine, log, local, seconds, source };
}

const settle = () => new Promise((r) => setTimeout(r, 60));

test('nothing is sent before all three lists have arrived; then one update with everything', async () => {
  const { w, engine, source, seconds } = rig();
  await source.start();
  assert.deepEqual(POLICY_RESOURCES.map((r) => w[r].started), [1, 1, 1], 'each watch started once');
  w.namespaces.put(nsObj('x'));
  w.pods.put(pod('x', 'a', '10.0.0.2', { app: 'a' }));
  w.pods.put(pod('x', 'b', '10.0.0.3', { app: 'b' }));
  w.namespaces.sync();
  w.pods.sync();
  await settle();
  assert.equal(engine.inputs.length, 0, 'policies not listed yet: a partial view would open isolated pods');
  assert.deepEqual(source.status().waitingFor, [{ resource: 'networkpolicies', error: undefined }]);
  w.networkpolicies.put(policy('x', 'deny', { podSelector: { matchLabels: { app: 'a' } } }));
  w.networkpolicies.sync();
  await until('the first update', () => engine.inputs.length === 1);
  await settle();
  assert.equal(engine.inputs.length, 1, 'a list worth of events is one update');
  const i = engine.last!;
  assert.deepEqual(i.pods.map((p) => p.name).sort(), ['a', 'b']);
  assert.deepEqual(i.namespaces.map((n) => n.name), ['x']);
  assert.deepEqual(i.policies.map((p) => p.name), ['deny']);
  assert.deepEqual(i.local, [{ ip: '10.0.0.2', namespace: 'x', name: 'a' }]);
  assert.deepEqual(i.nodeAddresses, ['10.0.0.1']);
  assert.deepEqual(i.exempt, ['10.96.0.0/12']);
  assert.deepEqual(seconds, [], 'the initial lists are not changes to time');
  const st = source.status();
  assert.equal(st.synced, true);
  assert.equal(st.pending, false);
  assert.equal(st.enforcedVersion, String(rv), 'the newest resourceVersion seen is enforced');
  assert.deepEqual(st.objects, { pods: 2, namespaces: 1, networkpolicies: 1 });
  await source.stop();
});

test('every change after that is an update of the whole state, timed from the event to enforcement', async () => {
  const { w, engine, source, seconds } = rig();
  await source.start();
  for (const r of POLICY_RESOURCES) w[r].sync();
  await until('the first update', () => engine.inputs.length === 1);
  w.pods.put(pod('x', 'a', '10.0.0.2'));
  await until('an update for the pod', () => engine.inputs.length === 2);
  assert.deepEqual(engine.last!.pods.map((p) => p.name), ['a']);
  const p = policy('x', 'p', { podSelector: {} });
  w.networkpolicies.put(p);
  await until('an update for the policy', () => engine.inputs.length === 3);
  w.networkpolicies.del(p);
  await until('an update for the deletion', () => engine.inputs.length === 4);
  assert.deepEqual(engine.last!.policies, []);
  assert.equal(seconds.length, 3, 'three changes, each timed');
  assert.ok(seconds.every((s) => s >= 0 && s < 60));
  assert.equal(source.status().enforcedVersion, p.metadata.resourceVersion);
  await source.stop();
});

test('a malformed object is logged once and left out; the rest is enforced; fixed, it comes back', async () => {
  const { w, engine, source, log } = rig();
  await source.start();
  for (const r of POLICY_RESOURCES) w[r].sync();
  const good = policy('x', 'good', { podSelector: {} });
  const bad = policy('x', 'bad', { podSelector: {}, ingress: [{ ports: [{ port: 'http', endPort: 90 }] }] });
  w.networkpolicies.put(good);
  w.networkpolicies.put(bad);
  w.pods.put(pod('x', 'broken', 'not-an-ip'));
  await until('an update', () => engine.last?.policies.length === 1);
  assert.deepEqual(engine.last!.policies.map((p) => p.name), ['good']);
  assert.deepEqual(engine.last!.pods, []);
  const st = source.status();
  assert.deepEqual(st.skipped.map((s) => s.object).sort(), ['networkpolicies:x/bad', 'pods:x/broken']);
  assert.match(st.skipped.find((s) => s.object === 'networkpolicies:x/bad')!.error, /NetworkPolicy x\/bad: spec\.ingress\.0\.ports\.0\.endPort: may not be set with a named port/);
  w.pods.put(pod('x', 'a', '10.0.0.2')); // another update: the malformed ones are not logged again
  await until('an update with the pod', () => engine.last?.pods.length === 1);
  assert.equal(log.lines.filter((l) => l.msg.includes('malformed')).length, 2, 'logged once each');
  w.networkpolicies.put({ ...bad, metadata: { ...bad.metadata, resourceVersion: String(++rv) }, spec: { podSelector: {}, ingress: [{ ports: [{ port: 80, endPort: 90 }] }] } });
  await until('the fixed policy enforced', () => engine.last?.policies.length === 2);
  assert.deepEqual(source.status().skipped.map((s) => s.object), ['pods:x/broken']);
  w.pods.del(pod('x', 'broken', ''));
  await until('an update without it', () => source.status().skipped.length === 0);
  await source.stop();
});

test("this host's attachments and addresses: an update when they change (kick or poll), none when they do not", async () => {
  const { w, engine, source, local, seconds } = rig({ localPollMs: 30 });
  await source.start();
  for (const r of POLICY_RESOURCES) w[r].sync();
  await until('the first update', () => engine.inputs.length === 1);
  source.kick();
  await settle();
  assert.equal(engine.inputs.length, 1, 'nothing changed: no update');
  local.pods = [...local.pods, { ip: '10.0.0.9', namespace: 'y', name: 'new' }];
  source.kick();
  await until('an update for the new attachment', () => engine.inputs.length === 2);
  assert.deepEqual(engine.last!.local.map((l) => l.ip), ['10.0.0.2', '10.0.0.9']);
  local.node = ['10.0.0.1', '10.0.0.254'];
  await until('the poll notices the new address', () => engine.inputs.length === 3);
  assert.deepEqual(engine.last!.nodeAddresses, ['10.0.0.1', '10.0.0.254']);
  assert.deepEqual(seconds, [], 'local changes are not API changes');
  await source.stop();
});

test('an update the engine refuses is sent again later, and the time counts from the first attempt', async () => {
  const { w, engine, source, seconds } = rig();
  await source.start();
  for (const r of POLICY_RESOURCES) w[r].sync();
  await until('the first update', () => engine.inputs.length === 1);
  engine.refuse = 2;
  w.networkpolicies.put(policy('x', 'p', { podSelector: {} }));
  await until('the error shows', () => source.status().lastError !== undefined);
  assert.match(source.status().lastError!, /Could not process rule/);
  assert.equal(source.status().pending, true);
  await until('enforced after the retries', () => engine.inputs.length === 2, 5000);
  assert.deepEqual(engine.last!.policies.map((p) => p.name), ['p']);
  assert.equal(seconds.length, 1);
  assert.equal(source.status().lastError, undefined);
  await source.stop();
});

test('real watches against the test API server: lists, events, and a re-list after the watch was cut', async () => {
  await withKube(async (e) => {
    const client = await e.client();
    const s = e.srv.store;
    s.create(R('namespaces'), undefined, { metadata: { name: 'x', labels: { team: 'blue' } } });
    s.create(R('pods'), 'x', { metadata: { name: 'a', labels: { app: 'a' } }, spec: { nodeName: 'h1', containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 8080 }] }] }, status: { phase: 'Running', podIP: '10.32.0.2' } });
    s.create(R('networkpolicies'), 'x', { metadata: { name: 'deny' }, spec: { podSelector: { matchLabels: { app: 'a' } } } });
    const watches = {
      pods: new ResourceWatch({ client, log: quiet }, { resource: 'pods', retryMinMs: 50 }),
      namespaces: new ResourceWatch({ client, log: quiet }, { resource: 'namespaces', retryMinMs: 50 }),
      networkpolicies: new ResourceWatch({ client, log: quiet }, { resource: 'networkpolicies', retryMinMs: 50 }),
    };
    const engine = new FakeEngine();
    const source = new PolicySource({ watches, engine, local: () => [{ ip: '10.32.0.2', namespace: 'x', name: 'a' }], nodeAddresses: () => ['10.32.0.1'], log: quiet }, { coalesceMs: 5 });
    await source.start();
    try {
      await until('the first update', () => engine.inputs.length >= 1);
      const first = engine.last!;
      assert.deepEqual(first.pods.map((p) => [p.name, p.ips, p.ports]), [['a', ['10.32.0.2'], [{ name: 'http', port: 8080, protocol: 'TCP' }]]]);
      assert.ok(first.namespaces.some((n) => n.name === 'x' && n.labels.team === 'blue' && n.labels['kubernetes.io/metadata.name'] === 'x'));
      assert.deepEqual(first.policies.map((p) => p.name), ['deny']);
      const created = s.create(R('networkpolicies'), 'x', { metadata: { name: 'allow' }, spec: { podSelector: {}, ingress: [{}] } });
      await until('the new policy enforced', () => source.status().enforcedVersion === created.metadata.resourceVersion);
      assert.deepEqual(engine.last!.policies.map((p) => p.name).sort(), ['allow', 'deny']);
      // cut every watch; changes made meanwhile arrive once they resume
      e.srv.dropWatches();
      const gone = s.delete(R('networkpolicies'), 'x', 'deny');
      await until('the deletion enforced', () => source.status().enforcedVersion === gone.metadata.resourceVersion);
      assert.deepEqual(engine.last!.policies.map((p) => p.name), ['allow']);
      // history compacted: the watches get 410 and list again; the state converges all the same
      s.compact();
      e.srv.dropWatches();
      s.create(R('pods'), 'x', { metadata: { name: 'b' }, spec: { containers: [{ name: 'c' }] }, status: { podIP: '10.32.0.3' } });
      await until('the pod after the re-list', () => engine.last?.pods.length === 2);
      assert.equal(source.status().synced, true);
    } finally {
      await source.stop();
    }
  });
});

test("the router's part: local pods and node addresses from IPAM records; the first write after the lists; drops counted from the start, as deltas", async () => {
  const rec = (network: string, address: string, pod?: AllocationRecord['pod']): AllocationRecord => ({ network, containerId: address, ifname: 'eth0', address, bridge: 'weave', pod, createdAt: '' });
  const records = [rec('_gateway', '10.32.0.1/12'), rec('weftnet', '10.32.0.5/12', { namespace: 'x', name: 'a' }), rec('weftnet', '10.32.0.3/12')];
  assert.deepEqual(localPods(records), [{ ip: '10.32.0.3' }, { ip: '10.32.0.5', namespace: 'x', name: 'a' }]);
  assert.deepEqual(nodeAddresses(records, ['10.0.1.100/24', '10.32.0.1/12']), ['10.0.1.100', '10.32.0.1']);

  const counts = { drop_count_in: 40, drop_count_out: 7 };
  const scripts: string[] = [];
  const nft = {
    version: async () => 'nftables v1.0.6',
    hasTable: async () => true,
    json: async () => [],
    apply: async (script: string) => void scripts.push(script),
    listSet: async (_f: string, _t: string, set: keyof typeof counts) => ({ name: set, table: 'weft_policy', family: 'bridge', type: 'inet_proto', elem: [{ elem: { val: 'tcp', counter: { packets: counts[set], bytes: 0 } } }] }),
  };
  await withKube(async (e) => {
    e.srv.store.create(R('namespaces'), undefined, { metadata: { name: 'x' } });
    // kubelet has not posted the address yet: the attachment's CNI_ARGS name the pod
    e.srv.store.create(R('pods'), 'x', { metadata: { name: 'a' }, spec: { containers: [{ name: 'c' }] } });
    e.srv.store.create(R('networkpolicies'), 'x', { metadata: { name: 'deny' }, spec: { podSelector: {} } });
    const part = new RouterPolicy(
      { client: await e.client(), attachments: () => records, exposed: () => [], log: quiet, nft: nft as unknown as Nft },
      { exempt: ['10.96.0.0/12'], engine: { blockedPollMs: 0, verifyMs: 3_600_000, debounceMs: 5 } },
    );
    await part.start();
    try {
      await until('the first write', () => scripts.length === 1);
      assert.match(scripts[0]!, /add element bridge weft_policy node_addrs \{ 10\.32\.0\.1 \}/);
      assert.match(scripts[0]!, /add element bridge weft_policy exempt \{ 10\.96\.0\.0-10\.111\.255\.255 \}/);
      const st = await part.status();
      assert.equal(st.enabled, true);
      assert.deepEqual(st.engine!.pods.map((p) => `${p.namespace}/${p.name} ${p.ip}`), ['x/a 10.32.0.5'], 'the local attachment named by CNI_ARGS is the API pod');
      counts.drop_count_in = 45;
      assert.deepEqual(await part.dropDeltas(), { ingress: 5, egress: 0 }, 'drops before this process started are not counted');
      assert.deepEqual(await part.dropDeltas(), { ingress: 0, egress: 0 });
      counts.drop_count_in = 2; // the table was removed and made again
      counts.drop_count_out = 9;
      assert.deepEqual(await part.dropDeltas(), { ingress: 2, egress: 2 });
      // this nft lists no chains: readiness says the table is damaged, and the engine writes it again
      assert.deepEqual(await part.readiness(), ['NetworkPolicy table: chain forward is missing']);
      await until('the table written again', () => scripts.length === 2);
    } finally {
      await part.stop();
    }
  });
});
