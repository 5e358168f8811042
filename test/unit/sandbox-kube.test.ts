/** The sandbox's Kubernetes mode without namespaces: router arguments, options, placement, --ports. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kubeRouterArgv } from '../../src/sandbox/kube';
import { loadManifests } from '../../src/sandbox/kube-pods';
import { parsePorts } from '../../src/sandbox/probe';
import { upOptions } from '../../src/sandbox/options';

test('kubeRouterArgv drops --peers (both spellings) and any earlier kube flags, and names the kubeconfig and Node', () => {
  const argv = ['router', '--socket', '/s', '--peers', '172.30.0.11', '--nickname', 'host2', '--peers=172.30.0.12', '--node-name', 'old', '--log-level', 'debug'];
  assert.deepEqual(kubeRouterArgv(argv, '/d/kubeconfig', 'host2'), ['router', '--socket', '/s', '--nickname', 'host2', '--log-level', 'debug', '--kubeconfig', '/d/kubeconfig', '--node-name', 'host2']);
  // applying it twice (a restart path) changes nothing
  const once = kubeRouterArgv(argv, '/k', 'h');
  assert.deepEqual(kubeRouterArgv(once, '/k', 'h'), once);
});

test('--ports: tcp/udp with a port, comma-separated; anything else names the flag', () => {
  assert.deepEqual(parsePorts('tcp/80, UDP:81'), [
    { protocol: 'tcp', port: 80 },
    { protocol: 'udp', port: 81 },
  ]);
  assert.throws(() => parsePorts('sctp/80'), /--ports: "sctp\/80" is not tcp\/PORT or udp\/PORT/);
  assert.throws(() => parsePorts('tcp/0'), /--ports: "tcp\/0"/);
  assert.throws(() => parsePorts('tcp/65536'), /--ports/);
  assert.throws(() => parsePorts(' , '), /--ports: is empty/);
});

test('up options: --manifests needs --kube; --kube owns --peers, --kubeconfig and --node-name', () => {
  const base = { weft: process.execPath, plugin: process.execPath };
  assert.throws(() => upOptions({ ...base, manifests: '/x' }), /--manifests: needs --kube/);
  assert.throws(() => upOptions({ ...base, kube: true, routerArgs: '--peers 1.2.3.4' }), /--router-args: --peers is set by --kube/);
  assert.throws(() => upOptions({ ...base, kube: true, routerArgs: '--kubeconfig=/k' }), /--router-args: --kubeconfig is set by --kube/);
  const o = upOptions({ ...base, kube: true, manifests: '/m', routerArgs: '--log-level debug' });
  assert.equal(o.kube, true);
  assert.equal(o.manifests, '/m');
  assert.equal(upOptions({ ...base, routerArgs: '--peers 1.2.3.4' }).kube, false, 'without --kube, --peers in --router-args is the user\'s');
});

test('placement: the weft.dev/host annotation or spec.nodeName picks a host; a host that is not there names file, document and field', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-sbk-unit-'));
  try {
    const pod = (name: string, extra: string) => `apiVersion: v1\nkind: Pod\nmetadata: {namespace: x, name: ${name}${extra}}\nspec: {containers: [{name: c, image: i}]}\n`;
    const f = join(dir, 'pods.yaml');
    writeFileSync(f, [pod('a', ', annotations: {weft.dev/host: host2}'), pod('b', ''), pod('c', ', annotations: {weft.dev/host: "3"}')].join('---\n') + '---\napiVersion: v1\nkind: Pod\nmetadata: {namespace: x, name: d}\nspec: {nodeName: host1}\n');
    const plan = await loadManifests(f, 3);
    assert.deepEqual([...plan.placed.entries()], [
      [`${f}#1`, 2],
      [`${f}#3`, 3],
      [`${f}#4`, 1],
    ]);
    await assert.rejects(loadManifests(f, 2), new RegExp(`${f}#3: metadata\\.annotations\\["weft\\.dev/host"\\]: "3" is not a sandbox host \\(host1\\.\\.host2\\)`));
    writeFileSync(f, pod('a', '') + '---\n' + pod('a', ''));
    await assert.rejects(loadManifests(f, 3), new RegExp(`${f}#2: Pod x/a appears twice`));
    writeFileSync(f, `apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {nodeName: worker7}\n`);
    await assert.rejects(loadManifests(f, 3), /spec\.nodeName: "worker7" is not a sandbox host/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
