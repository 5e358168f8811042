/**
 * End to end through the real CLI: `dist/weft sandbox up --kube --manifests examples/policy`
 * (the test API server in the underlay namespace, a Node per host, routers with no --peers,
 * the upstream x/y/z a/b/c layout as sandbox pods), then `probe`, `apply`, `delete` and a
 * malformed manifest, then `down`. One sandbox for the whole suite (its own prefix), removed
 * in `after` whatever happened.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, uid, weftAsync } from '../helpers/netns';
import { needs, NETNS } from '../helpers/needs';
import { namespacesWith, processesMentioning } from '../helpers/sandbox';
import { Sandbox, sandboxDir } from '../../src/sandbox';
import { apiRequest } from '../../src/kube/apiserver/admin';
import { compare, Truth } from '../../src/policy/matrix';
import { isAlive } from '../../src/sys/process';

const skip = needs(NETNS);
const EXAMPLES = join(ROOT, 'examples/policy');
const DENY_X = join(EXAMPLES, 'policies/deny-all-ingress-x.yaml');
const PODS = ['x', 'y', 'z'].flatMap((n) => ['a', 'b', 'c'].map((p) => `${n}/${p}`));
const SPECS = ['tcp/80', 'tcp/81', 'udp/80', 'udp/81'];

/** `dist/weft sandbox ...`: its exit code and output. */
const weft = (args: string[]) => weftAsync(['sandbox', ...args]);

type ProbeJson = { pods: { pod: string; ip: string; host: number }[]; matrices: Record<string, Record<string, Record<string, boolean>>> };

describe('sandbox in Kubernetes mode, through the CLI', { skip, concurrency: false, timeout: 600_000 }, () => {
  const prefix = `wsk${uid().slice(0, 4)}`;
  const dir = sandboxDir(prefix);
  const tmp = mkdtempSync(join(tmpdir(), 'weft-sbk-'));
  let up: Awaited<ReturnType<typeof weft>>;
  let sb: Sandbox;
  const api = () => ({ socket: sb.record!.kube!.socket });

  const probe = async (): Promise<ProbeJson> => {
    const r = await weft(['probe', '--prefix', prefix, '--json', '--timeout-ms', '3000']);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as ProbeJson;
  };
  /** Every matrix of the probe equals `expected`; the failure message shows where not. */
  const assertMatrices = (p: ProbeJson, expected: Truth) => {
    assert.deepEqual(Object.keys(p.matrices).sort(), SPECS);
    for (const spec of SPECS) {
      const seen = new Truth(PODS, false);
      for (const f of PODS) for (const t of PODS) seen.set(f, t, p.matrices[spec]![f]![t]!);
      assert.deepEqual(compare(expected, seen), [], `${spec}: cells that differ from the expected table`);
    }
  };

  before(async () => {
    up = await weft(['up', '--kube', '--hosts', '3', '--pods', '1', '--manifests', EXAMPLES, '--prefix', prefix, '--no-matrix', '--wait', '120']);
    assert.equal(up.code, 0, `up failed:\n${up.stdout}\n${up.stderr}`);
    sb = await Sandbox.open({ prefix });
  });
  after(async () => {
    await weft(['down', '--prefix', prefix]);
    rmSync(tmp, { recursive: true, force: true });
  });

  test('the routers run with a kubeconfig and no --peers, and the mesh is full', async () => {
    const st = sb.record!;
    assert.equal(st.hosts.length, 3);
    for (const h of st.hosts) {
      assert.ok(!h.routerArgv.includes('--peers'), `${h.nickname}: ${h.routerArgv.join(' ')}`);
      assert.deepEqual(h.routerArgv.slice(h.routerArgv.indexOf('--kubeconfig'), h.routerArgv.indexOf('--kubeconfig') + 4), ['--kubeconfig', st.kube!.kubeconfig, '--node-name', h.nickname]);
      const argv = readFileSync(`/proc/${h.pid}/cmdline`, 'utf8').split('\0');
      assert.ok(argv.includes('--kubeconfig') && !argv.includes('--peers'), 'the running process has them too');
    }
    const s = await weft(['status', '--prefix', prefix, '--json']);
    const js = JSON.parse(s.stdout);
    for (const h of js.hosts) {
      assert.equal(h.peers, 3, `${h.nickname} sees 3 peers`);
      assert.equal(h.established, 2, `${h.nickname} has 2 established connections`);
    }
    const rep = await sb.report(2);
    assert.equal(rep.kubernetes?.source, 'kubernetes: 3 nodes');
  });

  test("every Node's NetworkUnavailable is False, and status shows the API server and the Nodes", async () => {
    const s = await weft(['status', '--prefix', prefix, '--json']);
    const k = JSON.parse(s.stdout).kube;
    assert.equal(k.listen, '172.30.0.1:6443');
    assert.ok(k.alive && isAlive(k.pid), 'the API server runs');
    assert.deepEqual(k.nodes.map((n: { node: string }) => n.node).sort(), ['host1', 'host2', 'host3']);
    for (const n of k.nodes) assert.equal(n.networkUnavailable, 'False', `${n.node}: ${JSON.stringify(n)}`);
    const text = await weft(['status', '--prefix', prefix]);
    assert.match(text.stdout, /API server: 172\.30\.0\.1:6443 .*running/);
    assert.match(text.stdout, /Node host3 +172\.30\.0\.13 +Ready=True NetworkUnavailable=False/);
  });

  test('plain pods ping across hosts', async () => {
    const plain = sb.pods.filter((p) => !p.k8s);
    assert.equal(plain.length, 3, 'one plain pod per host');
    for (const a of plain) for (const b of plain) if (a !== b) assert.ok(await sb.ping(a, b), `${a.name} -> ${b.name} (${b.address})`);
  });

  test('the manifests became 9 pods spread over the hosts, their addresses in the API', async () => {
    const kp = sb.pods.filter((p) => p.k8s);
    assert.deepEqual(kp.map((p) => `${p.k8s!.namespace}/${p.k8s!.name}`).sort(), PODS);
    for (const h of [1, 2, 3]) assert.equal(kp.filter((p) => p.host === h).length, 3, `host${h} has 3 of them`);
    for (const p of kp) {
      const o = (await apiRequest(api(), 'GET', `/api/v1/namespaces/${p.k8s!.namespace}/pods/${p.k8s!.name}`)) as any;
      assert.equal(o.status.podIP, p.address, `${p.k8s!.name}'s podIP`);
      assert.equal(o.spec.nodeName, `host${p.host}`);
      assert.deepEqual(p.k8s!.ports.sort(), SPECS);
    }
  });

  test('probe: every pod reaches every pod on every port', async () => {
    assertMatrices(await probe(), new Truth(PODS, true));
    const text = await weft(['probe', '--prefix', prefix, '--ports', 'tcp/80']);
    assert.match(text.stdout, /^tcp\/80 +x\/a +x\/b/m, 'a table per port, upstream style');
    assert.equal(text.stdout.split('\n').filter((l) => /^[xyz]\/[abc] /.test(l)).length, 9, 'a row per pod');
    assert.doesNotMatch(text.stdout, /^[xyz]\/[abc] .*X/m, 'nothing blocked');
  });

  test("apply a deny-all ingress in x: x's column is blocked, the rest open; delete it: open again", async () => {
    const a = await weft(['apply', DENY_X, '--prefix', prefix]);
    assert.equal(a.code, 0, a.stderr);
    assertMatrices(await probe(), new Truth(PODS, true).ingress((p) => p.startsWith('x/'), false).loopback());
    const d = await weft(['delete', DENY_X, '--prefix', prefix]);
    assert.equal(d.code, 0, d.stderr);
    assertMatrices(await probe(), new Truth(PODS, true));
  });

  test('a Pod applied later becomes a pod that serves; deleting its file detaches it', async () => {
    const f = join(tmp, 'more.yaml');
    writeFileSync(
      f,
      `apiVersion: v1\nkind: Pod\nmetadata: {namespace: y, name: d, labels: {pod: d}, annotations: {weft.dev/host: host2}}\nspec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}\n`,
    );
    assert.equal((await weft(['apply', f, '--prefix', prefix])).code, 0);
    await sb.load();
    const d = sb.pods.find((p) => p.k8s?.name === 'd')!;
    assert.equal(d.host, 2);
    const p = await weft(['probe', '--prefix', prefix, '--json', '--ports', 'tcp/80', '--timeout-ms', '3000']);
    const m = (JSON.parse(p.stdout) as ProbeJson).matrices['tcp/80']!;
    assert.equal(m['x/a']!['y/d'], true, 'x/a reaches the new pod');
    assert.equal(m['y/d']!['z/c'], true, 'the new pod reaches z/c');
    assert.equal((await weft(['delete', f, '--prefix', prefix])).code, 0);
    await sb.load();
    assert.equal(sb.pods.find((x) => x.k8s?.name === 'd'), undefined);
    assert.ok(!namespacesWith(prefix).includes(d.name), 'its namespace is gone');
    await assert.rejects(apiRequest(api(), 'GET', '/api/v1/namespaces/y/pods/d'), /not found/);
  });

  test('a malformed manifest is refused naming the document, and nothing is created', async () => {
    const before = namespacesWith(prefix).sort();
    const doc = (policy: string) =>
      `apiVersion: v1\nkind: Namespace\nmetadata: {name: w}\n---\napiVersion: v1\nkind: Pod\nmetadata: {namespace: w, name: d}\nspec: {containers: [{name: c, image: i, ports: [{containerPort: 80}]}]}\n---\n${policy}`;
    // refused when read: a wrong apiVersion in the third document
    const bad = join(tmp, 'bad.yaml');
    writeFileSync(bad, doc('apiVersion: networking.k8s.io/v2\nkind: NetworkPolicy\nmetadata: {namespace: w, name: p}\nspec: {podSelector: {}}\n'));
    const r = await weft(['apply', bad, '--prefix', prefix]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, new RegExp(`${bad}#3: apiVersion: must be networking\\.k8s\\.io/v1`));
    // refused by the API server halfway: the Namespace and the Pod made before are undone
    const late = join(tmp, 'late.yaml');
    writeFileSync(late, doc('apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {namespace: w, name: Bad_Name}\nspec: {podSelector: {}}\n'));
    const r2 = await weft(['apply', late, '--prefix', prefix]);
    assert.equal(r2.code, 1);
    assert.match(r2.stderr, new RegExp(`${late}#3: .*Bad_Name`));
    // a host that is not there
    const nohost = join(tmp, 'nohost.yaml');
    writeFileSync(nohost, `apiVersion: v1\nkind: Pod\nmetadata: {namespace: x, name: e, annotations: {weft.dev/host: host9}}\nspec: {}\n`);
    const r3 = await weft(['apply', nohost, '--prefix', prefix]);
    assert.equal(r3.code, 2);
    assert.match(r3.stderr, /nohost\.yaml: metadata\.annotations\["weft\.dev\/host"\]: "host9" is not a sandbox host/);

    await assert.rejects(apiRequest(api(), 'GET', '/api/v1/namespaces/w'), /not found/);
    await assert.rejects(apiRequest(api(), 'GET', '/api/v1/namespaces/x/pods/e'), /not found/);
    assert.deepEqual(namespacesWith(prefix).sort(), before, 'no namespace made');
    await sb.load();
    assert.equal(sb.pods.filter((p) => p.k8s).length, 9);
  });

  test('add-host: a fourth host, a Node, is joined by the running routers without a restart; a Pod placed on it is reachable', async () => {
    const pids = sb.hosts.map((h) => h.pid);
    const r = await weft(['add-host', '--prefix', prefix, '--wait', '120']);
    assert.equal(r.code, 0, r.stderr);
    await sb.load();
    assert.equal(sb.hosts.length, 4);
    assert.deepEqual(sb.hosts.slice(0, 3).map((h) => h.pid), pids, 'the other routers kept running');
    assert.ok(!sb.host(4).routerArgv.includes('--peers'), 'the new router has no peers either');
    const js = JSON.parse((await weft(['status', '--prefix', prefix, '--json'])).stdout);
    for (const h of js.hosts) assert.equal(h.established, 3, `${h.nickname}: 3 established connections`);
    assert.equal(js.kube.nodes.find((n: { node: string }) => n.node === 'host4')?.networkUnavailable, 'False');
    const f = join(tmp, 'on4.yaml');
    writeFileSync(f, `apiVersion: v1\nkind: Pod\nmetadata: {namespace: z, name: e, labels: {pod: e}, annotations: {weft.dev/host: host4}}\nspec: {containers: [{name: c, image: i, ports: [{containerPort: 81, protocol: UDP}]}]}\n`);
    assert.equal((await weft(['apply', f, '--prefix', prefix])).code, 0);
    const p = JSON.parse((await weft(['probe', '--prefix', prefix, '--json', '--ports', 'udp/81', '--timeout-ms', '3000'])).stdout) as ProbeJson;
    assert.equal(p.pods.find((x) => x.pod === 'z/e')?.host, 4);
    assert.equal(p.matrices['udp/81']!['x/a']!['z/e'], true, 'x/a (host1) reaches z/e (host4)');
    assert.equal(p.matrices['udp/81']!['z/e']!['y/c'], true, 'z/e reaches y/c (host3)');
  });

  test('down stops the API server and the probe agents and leaves nothing', async () => {
    await sb.load();
    const agents = sb.pods.map((p) => p.k8s?.agentPid).filter((x): x is number => !!x);
    assert.equal(agents.length, 10, 'nine pods of the layout and one on host4');
    const pids = [sb.record!.kube!.pid!, ...agents];
    const d = await weft(['down', '--prefix', prefix]);
    assert.equal(d.code, 0, d.stderr);
    assert.deepEqual(namespacesWith(prefix), []);
    assert.deepEqual(pids.filter(isAlive), [], 'API server and agents gone');
    assert.deepEqual(processesMentioning(dir), []);
  });
});
