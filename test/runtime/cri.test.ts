/**
 * The kubelet's path: containerd's CRI plugin drives dist/weft-net for pod sandboxes.
 * RunPodSandbox sends ADD with the K8S_* CNI_ARGS, StopPodSandbox a DEL with the netns path,
 * RemovePodSandbox a second DEL with an empty netns. containerd, the router and the pods
 * live in a network namespace the test creates; the CNI directories are the test's own.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { linkSync, copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { uid } from '../helpers/netns';
import { Containerd } from './lib/containerd';
import { CriClient, type CriError } from './lib/cri';
import { buildBusyboxImage } from './lib/image';
import {
  cniResultFiles,
  routerAndCniDirs,
  inWeftRange,
  podAttachments,
  removeCgroupDirs,
  removeCniResults,
  runtimeSkip,
  waitFor,
  withCleanup,
} from './lib/util';

/** containerd's CRI plugin keeps its images and sandboxes in this containerd namespace. */
const K8S_NS = 'k8s.io';
/** The CRI plugin also loads the reference loopback plugin for every sandbox. */
const LOOPBACK = ['/usr/lib/cni/loopback', '/opt/cni/bin/loopback'].find((p) => existsSync(p));

test('CRI RunPodSandbox/StopPodSandbox/RemovePodSandbox through containerd: the pod gets a weft address and releases it', { timeout: 240_000 }, async (t) => {
  const skip = runtimeSkip(['containerd', 'containerd-shim-runc-v2', 'ctr', 'runc', 'nsenter', 'unshare', 'ip', 'iptables', 'ping', 'tar'], ['/bin/busybox', LOOPBACK ?? '/usr/lib/cni/loopback']);
  if (skip) return t.skip(skip);
  const t0 = Date.now();
  const phase = (what: string) => t.diagnostic(`${what}: ${Date.now() - t0} ms`);

  await withCleanup(async (c) => {
    const dir = mkdtempSync(join(tmpdir(), 'weft-rt-cri-'));
    c.defer('remove temp dir', () => rmSync(dir, { recursive: true, force: true }));
    const net = `weftrt-${uid()}`;
    c.defer('remove cached CNI results', () => removeCniResults(net));
    const cgroupParent = `/weft-test-${uid()}`;
    c.defer('remove cgroups', () => removeCgroupDirs(cgroupParent));

    const { ns, router, bin, netd } = await routerAndCniDirs(c, dir, 'wrt-cri');
    try {
      linkSync(LOOPBACK!, join(bin, 'loopback'));
    } catch {
      copyFileSync(LOOPBACK!, join(bin, 'loopback'));
    }
    // containerd 1.6 does not notice a config written after it started: write it first
    writeFileSync(
      join(netd, '10-weft.conflist'),
      JSON.stringify({
        cniVersion: '1.0.0',
        name: net,
        plugins: [{ type: 'weft-net', socket: router.socket, logLevel: 'debug', logFile: join(dir, 'weft-net.log') }],
      }),
    );

    const pause = buildBusyboxImage(join(dir, 'image'), `localhost/weft-test/pause:${uid()}`, ['sleep', '86400']);
    const ctrd = await Containerd.start(ns, join(dir, 'containerd'), { cri: { sandboxImage: pause.ref, binDir: bin, confDir: netd } });
    c.defer('stop containerd', () => ctrd.stop([K8S_NS]));
    ctrd.ctr(K8S_NS, ['image', 'import', pause.tar], 60_000);

    const cri = new CriClient(ctrd.socket);
    c.defer('close CRI client', () => cri.close());
    const version = await cri.version();
    assert.equal(version.runtimeName, 'containerd');
    // NetworkReady needs the conflist loaded; RuntimeReady the runtime
    await waitFor(
      'CRI Status to report RuntimeReady and NetworkReady',
      async () => {
        const conds = await cri.status();
        return ['RuntimeReady', 'NetworkReady'].every((ty) => conds.some((x) => x.type === ty && x.status));
      },
      20_000,
      200,
    );
    phase('containerd CRI ready');

    const metadata = { name: `pod-${uid()}`, uid: randomUUID(), namespace: 'weft-test', attempt: 0 };
    const id = await cri.runPodSandbox({ metadata, cgroupParent });
    c.defer('stop and remove the sandbox', async () => {
      await cri.stopPodSandbox(id).catch(() => undefined);
      await cri.removePodSandbox(id).catch(() => undefined);
    });
    phase('RunPodSandbox');

    const st = await cri.podSandboxStatus(id);
    assert.equal(st.state, 'SANDBOX_READY');
    const ip = st.network?.ip ?? '';
    assert.ok(inWeftRange(ip), `pod IP "${ip}" is not in 10.32.0.0/12`);

    // the router holds exactly this pod, under the sandbox ID, with the pod identity from CNI_ARGS
    const pods = podAttachments(router.report());
    assert.equal(pods.length, 1, JSON.stringify(pods));
    assert.deepEqual(
      [pods[0].network, pods[0].containerId, pods[0].ifname, pods[0].address, pods[0].pod],
      [net, id, 'eth0', `${ip}/12`, { namespace: metadata.namespace, name: metadata.name }],
    );
    // the pod answers on the bridge of the test's namespace
    assert.ok(ns.ping(ip, 2), `the pod at ${ip} does not answer ping from its host namespace`);
    const veths = () => ns.links().filter((l) => l.ifname.startsWith('vethwe')).map((l) => l.ifname);
    assert.equal(veths().length, 1, 'one host veth end per pod');
    phase('pod reachable');

    await cri.stopPodSandbox(id);
    phase('StopPodSandbox');
    const afterStop = router.report();
    assert.deepEqual(podAttachments(afterStop), [], `StopPodSandbox left allocations: ${JSON.stringify(afterStop.ipam.attachments)}`);
    // off the wire at once (the ping below), deleted by the router in the background
    await waitFor('the router to delete the host veth end after StopPodSandbox', () => veths().length === 0, 10_000, 100);
    assert.equal(ns.ping(ip, 1), false, `${ip} still answers after StopPodSandbox`);
    assert.equal((await cri.podSandboxStatus(id)).state, 'SANDBOX_NOTREADY');

    // Remove sends a second DEL (empty netns), which must succeed for an already released pod
    await cri.removePodSandbox(id);
    phase('RemovePodSandbox');
    await assert.rejects(cri.podSandboxStatus(id), (e: CriError) => e.code === 5 /* NOT_FOUND */);
    assert.deepEqual(podAttachments(router.report()), []);
    assert.deepEqual(cniResultFiles(net), [], 'libcni keeps a cached result only when DEL failed');
  });
});
