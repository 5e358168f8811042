/**
 * The test API server as the sandbox will run it: `dist/weft kube-apiserver` inside one
 * network namespace, clients in another reaching it over a veth (as sandbox hosts reach the
 * underlay namespace), through the bundled client of `dist/weft kube-check`; and the machine's
 * namespace changing objects through its unix socket (as `weft sandbox` will).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Netns, sh, uid, WEFT } from '../helpers/netns';
import { needs, NETNS } from '../helpers/needs';
import { until } from '../helpers/kube';
import { applyObject, deleteObject } from '../../src/kube/apiserver/admin';
import { nodeFor } from '../../src/kube/apiserver/cli';

const skip = needs(NETNS);

test('dist/weft kube-apiserver in one namespace serves clients in another; kube-check reads Nodes and the record', { skip }, async () => {
  const server = Netns.create('wk-api');
  const host = Netns.create('wk-h1');
  const dir = mkdtempSync(join(tmpdir(), 'weft-kube-'));
  const veth = `wk${uid()}`;
  let child: ReturnType<typeof spawn> | undefined;
  try {
    sh('ip', ['link', 'add', veth, 'netns', server.name, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host.name]);
    server.run('ip', ['addr', 'add', '192.168.251.1/24', 'dev', veth]);
    server.run('ip', ['link', 'set', veth, 'up']);
    host.run('ip', ['addr', 'add', '192.168.251.11/24', 'dev', 'eth0']);
    host.run('ip', ['link', 'set', 'eth0', 'up']);
    const kubeconfig = join(dir, 'kubeconfig');
    const socket = join(dir, 'api.sock');
    child = spawn('nsenter', [`--net=${server.path}`, '--', WEFT, 'kube-apiserver', '--listen', '192.168.251.1:6443', '--socket', socket, '--kubeconfig-out', kubeconfig, '--node', 'h1=192.168.251.11', '--node', 'h2=192.168.251.12'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    await until('the server to listen', () => out.includes(`listening on http://192.168.251.1:6443 and ${socket}`) && existsSync(kubeconfig), 20_000);
    assert.equal(JSON.parse(readFileSync(kubeconfig, 'utf8')).clusters[0].cluster.server, 'http://192.168.251.1:6443');
    // from the host namespace, with the single executable's own bundled client
    const check = JSON.parse(host.run(WEFT, ['kube-check', '--kubeconfig', kubeconfig, '--node-name', 'h1', '--json'], { timeoutMs: 30_000 }));
    assert.equal(check.config, 'kubeconfig');
    assert.deepEqual(check.nodes, [
      { name: 'h1', address: '192.168.251.11', self: true },
      { name: 'h2', address: '192.168.251.12', self: false },
    ]);
    assert.deepEqual(check.record.peers, {});
    assert.deepEqual(check.policy, { pods: 0, namespaces: 4, networkpolicies: 0 }, 'the NetworkPolicy sources can be listed');
    // the sandbox's way in from the machine's namespace: the unix socket
    await applyObject({ socket }, nodeFor('h3', '192.168.251.13'));
    await deleteObject({ socket }, nodeFor('h2', ''));
    const after = JSON.parse(host.run(WEFT, ['kube-check', '--kubeconfig', kubeconfig, '--node-name', 'h1', '--json'], { timeoutMs: 30_000 }));
    assert.deepEqual(after.nodes.map((n: { name: string; address: string }) => `${n.name}=${n.address}`), ['h1=192.168.251.11', 'h3=192.168.251.13']);
  } finally {
    if (child?.pid && child.exitCode === null) {
      child.kill('SIGTERM');
      await until('the server to exit', () => child!.exitCode !== null || child!.signalCode !== null, 10_000).catch(() => child!.kill('SIGKILL'));
    }
    host.destroy();
    server.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
});
