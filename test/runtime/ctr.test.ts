/**
 * containerd's `ctr run --cni` drives dist/weft-net: ctr reads the first config in
 * /etc/cni/net.d and looks for plugins in /opt/cni/bin and /usr/lib/cni, so it runs in a
 * private mount namespace where the test's own directories are bound over those paths.
 * containerd, the router and every container live in a network namespace the test creates.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { uid } from '../helpers/netns';
import { Containerd } from './lib/containerd';
import { buildBusyboxImage } from './lib/image';
import {
  Bg,
  cniResultFiles,
  ensureMountPoint,
  inPrivateMounts,
  routerAndCniDirs,
  inWeftRange,
  parseInet,
  pluginDirsPresent,
  podAttachments,
  removeCgroupDirs,
  removeCniResults,
  runtimeSkip,
  waitFor,
  withCleanup,
} from './lib/util';


test('ctr run --cni: two containers get weft addresses, ping each other, and release them on removal', { timeout: 240_000 }, async (t) => {
  const skip = runtimeSkip(['containerd', 'containerd-shim-runc-v2', 'ctr', 'runc', 'nsenter', 'unshare', 'ip', 'iptables', 'tar'], ['/bin/busybox']);
  if (skip) return t.skip(skip);
  const t0 = Date.now();
  const phase = (what: string) => t.diagnostic(`${what}: ${Date.now() - t0} ms`);

  await withCleanup(async (c) => {
    const dir = mkdtempSync(join(tmpdir(), 'weft-rt-ctr-'));
    c.defer('remove temp dir', () => rmSync(dir, { recursive: true, force: true }));
    const net = `weftrt-${uid()}`;
    // the containerd namespace (not a network namespace); ctr names cgroups /<namespace>/<id>
    const CTR_NS = `weft-test-${uid()}`;
    c.defer('remove cgroups', () => removeCgroupDirs(CTR_NS));
    c.defer('remove cached CNI results', () => removeCniResults(net));

    const { ns, router, bin, netd } = await routerAndCniDirs(c, dir, 'wrt-ctr');
    writeFileSync(
      join(netd, '10-weft.conflist'),
      JSON.stringify({
        cniVersion: '1.0.0',
        name: net,
        plugins: [{ type: 'weft-net', socket: router.socket, logLevel: 'debug', logFile: join(dir, 'weft-net.log') }],
      }),
    );
    ensureMountPoint('/etc/cni/net.d', c);
    const pluginDirs = pluginDirsPresent();
    if (pluginDirs.length === 0) {
      ensureMountPoint('/usr/lib/cni', c);
      pluginDirs.push('/usr/lib/cni');
    }
    const binds: [string, string][] = [[netd, '/etc/cni/net.d'], ...pluginDirs.map((d): [string, string] => [bin, d])];

    const image = buildBusyboxImage(join(dir, 'image'), `localhost/weft-test/busybox:${uid()}`);
    const ctrd = await Containerd.start(ns, join(dir, 'containerd'));
    c.defer('stop containerd', () => ctrd.stop([CTR_NS]));
    ctrd.ctr(CTR_NS, ['image', 'import', image.tar], 60_000);
    phase('containerd up, image imported');

    // each container prints its eth0 address (the network is set up before the task starts), then idles
    const ids = ['c1', 'c2'];
    const runs = ids.map(
      (id) =>
        new Bg(
          inPrivateMounts(ns.path, binds, [
            'ctr', '-a', ctrd.socket, '-n', CTR_NS, 'run', '--rm', '--cni', '--fifo-dir', ctrd.fifoDir,
            image.ref, id, 'sh', '-c', 'ip -4 -o addr show dev eth0; exec sleep 600',
          ]),
        ),
    );
    c.defer('stop ctr run clients', async () => {
      for (const r of runs) await r.stop(2000);
    });
    const addrs: string[] = [];
    for (const r of runs) {
      addrs.push(
        await waitFor(
          `${r.argv.slice(-5, -3).join(' ')} to print its eth0 address`,
          () => {
            if (!r.running) throw new Error(`ctr run exited: ${r.err || r.out}`);
            return parseInet(r.out);
          },
          30_000,
        ),
      );
    }
    phase('both containers running');

    for (const a of addrs) {
      const [ip, len] = a.split('/');
      assert.ok(inWeftRange(ip!), `${a} is not in 10.32.0.0/12`);
      assert.equal(len, '12', `${a}: eth0 should carry the range's prefix length`);
    }
    assert.notEqual(addrs[0], addrs[1], 'the two containers got the same address');

    // the router's view matches what the containers see: one allocation per container, keyed by ctr's ID
    const pods = podAttachments(router.report());
    assert.deepEqual(
      pods.map((p) => [p.network, p.containerId, p.ifname, p.address]).sort(),
      ids.map((id, i) => [net, `${CTR_NS}-${id}`, 'eth0', addrs[i]]).sort(),
    );

    const ip = addrs.map((a) => a.split('/')[0]!);
    for (const [from, to] of [
      ['c1', ip[1]!],
      ['c2', ip[0]!],
    ] as const) {
      const r = ctrd.tryCtr(CTR_NS, ['task', 'exec', '--exec-id', `ping-${uid()}`, '--fifo-dir', ctrd.fifoDir, from, 'ping', '-c', '2', '-i', '0.2', '-W', '2', to], 30_000);
      assert.ok(r.ok && /[12] packets received/.test(r.out), `${from} cannot ping ${to}: ${r.out}${r.err}`);
    }
    phase('pings done');

    // removal: the task dies, ctr sends DEL (empty CNI_NETNS) and --rm deletes the container
    for (const id of ids) ctrd.ctr(CTR_NS, ['task', 'kill', '-s', 'SIGKILL', id], 10_000);
    for (const r of runs) {
      await r.wait(30_000);
      assert.doesNotMatch(r.err, /level=error|failed/i, `ctr run reported an error on teardown: ${r.err}`);
    }
    await waitFor('containers to be removed', () => ctrd.containers(CTR_NS).length === 0, 15_000);
    phase('containers removed');

    const report = router.report();
    assert.deepEqual(podAttachments(report), [], `allocations left after removal: ${JSON.stringify(report.ipam.attachments)}`);
    assert.ok(report.ipam.attachments.length >= 1, 'the bridge gateway entry should remain');
    // the router deletes detached host ends in the background
    await waitFor('host veth ends to be deleted', () => ns.links().every((l) => !l.ifname.startsWith('vethwe')), 10_000);
    assert.deepEqual(cniResultFiles(net), [], 'libcni keeps a cached result only when DEL failed');
  });
});
