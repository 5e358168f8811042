/**
 * podman 4.3 with its CNI backend drives dist/weft-net. Every podman path is in the test's
 * own directory (CONTAINERS_CONF, --root, --runroot, --network-config-dir, cni_plugin_dirs);
 * podman, conmon and the container run in a network namespace the test creates.
 * The conflist says cniVersion 0.4.0, as the conflists podman writes itself do, so podman
 * parses a down-converted result.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { uid, type Netns } from '../helpers/netns';
import { buildBusyboxImage } from './lib/image';
import {
  cniResultFiles,
  inWeftRange,
  routerAndCniDirs,
  parseInet,
  podAttachments,
  removeCgroupDirs,
  removeCniResults,
  removeIfCreated,
  runtimeSkip,
  unmountUnder,
  waitFor,
  withCleanup,
} from './lib/util';

/** Runs podman with the test's config in `ns`; the result with stdout/stderr. */
function podmanRunner(ns: Netns, dir: string) {
  const conf = join(dir, 'containers.conf');
  const globals = ['--root', join(dir, 'root'), '--runroot', join(dir, 'runroot'), '--network-config-dir', join(dir, 'net.d')];
  return (args: string[], timeoutMs = 60_000) => {
    const r = spawnSync('nsenter', [`--net=${ns.path}`, '--', 'podman', ...globals, ...args], {
      encoding: 'utf8',
      timeout: timeoutMs,
      env: { ...process.env, CONTAINERS_CONF: conf },
    });
    return { ok: r.status === 0, out: r.stdout ?? '', err: (r.stderr ?? '') + (r.error ? String(r.error) : '') };
  };
}

test('podman (CNI backend): a container on the weft network gets an address, pings the gateway, and releases it on removal', { timeout: 240_000 }, async (t) => {
  const skip = runtimeSkip(['podman', 'conmon', 'runc', 'nsenter', 'ip', 'iptables', 'tar'], ['/bin/busybox']);
  if (skip) return t.skip(skip);
  const t0 = Date.now();
  const phase = (what: string) => t.diagnostic(`${what}: ${Date.now() - t0} ms`);

  await withCleanup(async (c) => {
    // what podman writes outside its configured paths: runc's default root and the blob info cache
    removeIfCreated('/run/runc', c);
    removeIfCreated('/var/lib/containers', c);
    removeIfCreated('/var/lib/containers/cache', c);
    removeIfCreated('/var/lib/containers/cache/blob-info-cache-v1.boltdb', c);

    const dir = mkdtempSync(join(tmpdir(), 'weft-rt-podman-'));
    c.defer('remove temp dir', () => rmSync(dir, { recursive: true, force: true }));
    c.defer('unmount leftovers', () => unmountUnder(dir));
    const net = `weftrt-${uid()}`;
    c.defer('remove cached CNI results', () => removeCniResults(net));
    const cgroupParent = `/weft-test-${uid()}`;
    c.defer('remove cgroups', () => removeCgroupDirs(cgroupParent));

    const { ns, router, bin, netd } = await routerAndCniDirs(c, dir, 'wrt-pod');
    const tmp = join(dir, 'tmp');
    mkdirSync(tmp);
    writeFileSync(
      join(netd, `${net}.conflist`),
      JSON.stringify({
        cniVersion: '0.4.0',
        name: net,
        plugins: [{ type: 'weft-net', socket: router.socket, logLevel: 'debug', logFile: join(dir, 'weft-net.log') }],
      }),
    );
    writeFileSync(
      join(dir, 'containers.conf'),
      [
        '[containers]',
        // the default rlimits cannot be set here ("error setting rlimit type 7")
        'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]',
        '[engine]',
        'cgroup_manager = "cgroupfs"',
        'events_logger = "file"',
        `tmp_dir = ${JSON.stringify(tmp)}`,
        '[network]',
        'network_backend = "cni"',
        `network_config_dir = ${JSON.stringify(netd)}`,
        `cni_plugin_dirs = [${JSON.stringify(bin)}]`,
      ].join('\n') + '\n',
    );
    const podman = podmanRunner(ns, dir);
    c.defer('remove podman containers', () => {
      const r = podman(['rm', '--all', '--force', '--time', '0'], 60_000);
      if (!r.ok) throw new Error(r.err);
    });

    const image = buildBusyboxImage(join(dir, 'image'), `localhost/weft-test/busybox:${uid()}`);
    const load = podman(['load', '-i', image.tar]);
    assert.ok(load.ok, `podman load: ${load.err}`);
    const nets = podman(['network', 'ls', '--format', '{{.Name}}']);
    assert.ok(nets.ok && nets.out.split('\n').includes(net), `podman does not list network ${net}: ${nets.out}${nets.err}`);
    phase('image loaded');

    const name = `weft-${uid()}`;
    const run = podman([
      'run', '-d', '--pull=never', '--name', name, '--cgroup-parent', cgroupParent, '--network', net,
      image.ref, 'sh', '-c', 'ip -4 -o addr show dev eth0; exec sleep 600',
    ]);
    assert.ok(run.ok, `podman run: ${run.err}`);
    const id = run.out.trim();
    assert.match(id, /^[0-9a-f]{64}$/);
    phase('container started');

    const addr = await waitFor('the container to print its eth0 address', () => parseInet(podman(['logs', name]).out), 20_000);
    const [ip, len] = addr.split('/');
    assert.ok(inWeftRange(ip!), `${addr} is not in 10.32.0.0/12`);
    assert.equal(len, '12');

    // podman parsed our 0.4.0 result: its view of the attachment matches the container's
    const inspect = podman(['inspect', name]);
    assert.ok(inspect.ok, inspect.err);
    const settings = JSON.parse(inspect.out)[0].NetworkSettings.Networks[net];
    assert.ok(settings, `podman inspect shows no ${net} network: ${inspect.out}`);
    assert.equal(`${settings.IPAddress}/${settings.IPPrefixLen}`, addr);

    // the router recorded it under podman's container ID, with the pod name podman passes in CNI_ARGS
    const report = router.report();
    const gateways = (report.ipam.attachments as any[]).filter((a) => a.network === '_gateway');
    assert.equal(gateways.length, 1, JSON.stringify(report.ipam.attachments));
    const gw = gateways[0].address.split('/')[0] as string;
    assert.equal(settings.Gateway, gw, 'podman should see the bridge gateway from the result');
    const pods = podAttachments(report);
    assert.equal(pods.length, 1, JSON.stringify(pods));
    assert.deepEqual([pods[0].network, pods[0].containerId, pods[0].ifname, pods[0].address, pods[0].pod?.name], [net, id, 'eth0', addr, name]);

    const routes = podman(['exec', name, 'ip', 'route']);
    assert.match(routes.out, new RegExp(`^default via ${gw.replace(/\./g, '\\.')} dev eth0`, 'm'), routes.out + routes.err);
    const ping = podman(['exec', name, 'ping', '-c', '2', '-i', '0.2', '-W', '2', gw], 30_000);
    assert.ok(ping.ok && /[12] packets received/.test(ping.out), `ping ${gw}: ${ping.out}${ping.err}`);
    phase('gateway pinged');

    const rm = podman(['rm', '--force', '--time', '0', name]);
    assert.ok(rm.ok, `podman rm: ${rm.err}`);
    phase('container removed');

    const after = router.report();
    assert.deepEqual(podAttachments(after), [], `allocations left after removal: ${JSON.stringify(after.ipam.attachments)}`);
    // the router deletes detached host ends in the background
    await waitFor('host veth ends to be deleted', () => ns.links().every((l) => !l.ifname.startsWith('vethwe')), 10_000);
    assert.deepEqual(cniResultFiles(net), [], 'libcni keeps a cached result only when DEL failed');
    const ps = podman(['ps', '--all', '--quiet']);
    assert.equal(ps.out.trim(), '', 'podman still lists containers');
  });
});
