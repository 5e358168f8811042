/**
 * Kubernetes mode through real routers: the test API server (`dist/weft kube-apiserver`) in
 * the underlay's namespace, routers in host namespaces with --kubeconfig and no peers, no
 * default route and no --advertise-addr. The machine's namespace changes Nodes through the
 * server's unix socket.
 */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cni, cniEnv, netConf, Netns, RouterProc, scope, underlayHosts, until, WEFT } from '../helpers/netns';
import { needs, NETNS } from '../helpers/needs';
import { apiRequest, applyObject, deleteObject } from '../../src/kube/apiserver/admin';
import { apiServerArgv, nodeFor } from '../../src/kube/apiserver/cli';

const skip = needs(NETNS);
const FAST = { WEFT_HEARTBEAT_MS: '500', WEFT_RETRY_MIN_MS: '200', WEFT_RETRY_MAX_MS: '1000', WEFT_PROBE_MS: '1000', WEFT_PROGRAM_MS: '1000' };
const NET = '172.31.12';

describe('Kubernetes mode: peers, reclaim and node condition from the API', { skip, concurrency: false, timeout: 240_000 }, () => {
  const { track, defer, cleanup } = scope();
  after(cleanup);
  const dir = mkdtempSync(join(tmpdir(), 'weft-kr-'));
  defer(() => rmSync(dir, { recursive: true, force: true }));
  const socket = join(dir, 'api.sock');
  const kubeconfig = join(dir, 'kubeconfig');
  const api = { socket };
  const routers: RouterProc[] = [];
  const hs = skip ? Object.assign([], { ul: undefined as never }) : underlayHosts('wkr', 4, NET, track);

  const router = (i: number) => {
    const r = track(new RouterProc(hs[i - 1]!, ['--kubeconfig', kubeconfig, '--node-name', `h${i}`, '--nickname', `h${i}`], join(dir, `r${i}`), false));
    r.env = FAST;
    routers[i] = r;
    return r;
  };
  const established = (r: RouterProc) => r.report().mesh.connections.filter((c: any) => c.state === 'established').length;
  const condition = async (node: string) => {
    const n = (await apiRequest(api, 'GET', `/api/v1/nodes/${node}`)) as any;
    return n.status.conditions.find((c: any) => c.type === 'NetworkUnavailable');
  };
  const record = async () => JSON.parse(((await apiRequest(api, 'GET', '/api/v1/namespaces/kube-system/configmaps/weft-peers')) as any).data['peers.json']);

  test('three Nodes: the mesh forms with no peers given, and each NetworkUnavailable turns False', async () => {
    hs.ul.run('ip', ['addr', 'add', `${NET}.100/24`, 'dev', 'ul0']);
    const argv = apiServerArgv({ listen: `${NET}.100:6443`, socket, kubeconfig, nodes: [1, 2, 3].map((i) => [`h${i}`, `${NET}.${i}`] as const) });
    const srv = spawn('nsenter', [`--net=${hs.ul.path}`, '--', WEFT, ...argv], { stdio: 'ignore' });
    defer(() => srv.kill('SIGKILL'));
    assert.ok(await until(() => existsSync(kubeconfig) && existsSync(socket), 20_000), 'the API server is up');
    await Promise.all([1, 2, 3].map((i) => router(i).start()));
    assert.ok(await until(() => [1, 2, 3].every((i) => established(routers[i]!) === 2), 30_000), 'full mesh of three');
    for (const i of [1, 2, 3]) {
      const rep = routers[i]!.report();
      assert.equal(rep.kubernetes.source, 'kubernetes: 3 nodes');
      assert.equal(rep.kubernetes.nodeName, `h${i}`);
      assert.deepEqual(rep.mesh.targets.sort(), [1, 2, 3].filter((j) => j !== i).map((j) => `${NET}.${j}:6783`).sort(), 'targets are the other Nodes');
      assert.equal(rep.router.underlay.ip, `${NET}.${i}`, 'underlay found by the route to the Nodes');
    }
    // consensus follows the full mesh once every router has heard from all three (bounded wait)
    assert.ok(await until(() => routers[1]!.report().ipam.owners.length === 3, 30_000), 'one ring agreed by consensus over the three Nodes');
    const ring = (i: number) => JSON.stringify(routers[i]!.report().ipam.owners.map((o: any) => o.peer).sort());
    assert.ok(await until(() => ring(2) === ring(1) && ring(3) === ring(1), 30_000), 'the same ring everywhere');
    assert.ok(await until(async () => (await Promise.all(['h1', 'h2', 'h3'].map(condition))).every((c) => c?.status === 'False'), 30_000), 'NetworkUnavailable=False on every Node');
    assert.equal((await condition('h1')).reason, 'WeftIsUp');
  });

  test('a fourth Node added later is joined by the running routers without a restart', async () => {
    await applyObject(api, nodeFor('h4', `${NET}.4`));
    await router(4).start();
    assert.ok(await until(() => [1, 2, 3, 4].every((i) => established(routers[i]!) === 3), 30_000), 'full mesh of four');
    assert.equal(routers[4]!.report().ipam.status, 'ready');
  });

  test('a Node deleted while its router is down: exactly one live router takes over its space', async () => {
    const gone = routers[3]!.report().router.name;
    await routers[3]!.kill('SIGTERM');
    assert.ok(await until(() => routers[1]!.report().mesh.peers.some((p: any) => p.name === gone && !p.reachable), 20_000));
    await deleteObject(api, nodeFor('h3', ''));
    assert.ok(await until(async () => (await record()).lastReclaim?.peer === gone, 30_000), 'the record shows the takeover');
    const rec = await record();
    const live = [1, 2, 4].map((i) => routers[i]!.report().router.name);
    assert.ok(live.includes(rec.lastReclaim.by), `taken over by a live router: ${rec.lastReclaim.by}`);
    assert.ok(await until(() => [1, 2, 4].every((i) => !routers[i]!.report().ipam.owners.some((o: any) => o.peer === gone)), 20_000), 'no router sees the deleted peer own anything');
    const total = routers[1]!.report().ipam.owners.reduce((n: number, o: any) => n + o.size, 0);
    assert.equal(total, 2 ** 20, 'the whole range is still owned, by the live routers');
    // pods on the remaining hosts keep allocating, and no address is held twice
    const got: string[] = [];
    for (const i of [1, 2, 4]) {
      for (let k = 0; k < 3; k++) {
        const pod = track(Netns.create(`wkrp${i}`));
        const add = cni(hs[i - 1]!, cniEnv('ADD', `kr-${i}-${k}`, pod.path), netConf(routers[i]!.socket));
        assert.equal(add.code, 0, `ADD on h${i}: ${add.stdout}${add.stderr}`);
        got.push(add.json.ips[0].address);
      }
    }
    assert.equal(new Set(got).size, got.length, `distinct addresses: ${got.join(' ')}`);
    // router 1's view of the record follows the API's watch: wait for it (bounded)
    const { spawnSync } = await import('node:child_process');
    const status = () => spawnSync(WEFT, ['--socket', routers[1]!.socket, 'status'], { encoding: 'utf8' }).stdout;
    const shown = new RegExp(`LastReclaim: ${gone} \\(node h3, \\d+ addresses\\) by `);
    assert.ok(await until(() => shown.test(status()), 15_000), `weft status shows the takeover: ${status()}`);
  });
});
