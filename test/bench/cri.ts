/**
 * What users feel: containerd's CRI RunPodSandbox, and StopPodSandbox + RemovePodSandbox, with
 * weft-net next to Debian's reference bridge + host-local, the same portmap chained on both,
 * in the same run. Two containerd instances (one per network config, as containerd loads one
 * conflist), each in a network namespace of its own made here, through the CRI client the
 * runtime tests use (test/runtime/lib/cri.ts). Pods alternate between the two.
 *
 * Env: BENCH_CRI_RUNS (default 15), BENCH_CRI_WARMUP (2).
 */
import { copyFileSync, linkSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { Netns, RouterProc, uid } from '../helpers/netns';
import { Containerd } from '../runtime/lib/containerd';
import { CriClient } from '../runtime/lib/cri';
import { buildBusyboxImage } from '../runtime/lib/image';
import { Cleanup, installPlugin, podAttachments, removeCgroupDirs, removeCniResults, runtimeSkip, stopRouter, waitFor } from '../runtime/lib/util';
import { type BenchContext, type Row, row, waitQuiet } from './common';
import { median, round } from './stats';

const K8S_NS = 'k8s.io';
const REF_DIR = process.env.BENCH_CNI_DIR || '/usr/lib/cni';

function intEnv(name: string, dflt: number): number {
  const v = Number(process.env[name] ?? dflt);
  if (!Number.isInteger(v) || v < 0) throw new Error(`${name}="${process.env[name]}": expected a whole number`);
  return v;
}

function linkOrCopy(src: string, dst: string): void {
  try {
    linkSync(src, dst);
  } catch {
    copyFileSync(src, dst);
  }
}

interface Side {
  key: 'weft' | 'ref';
  ns: Netns;
  cri: CriClient;
  net: string;
  run: number[];
  /** StopPodSandbox + RemovePodSandbox, and each alone. */
  stop: number[];
  stopOnly: number[];
  removeOnly: number[];
  failures: string[];
}

/** The `npm run bench` part: CRI pod start and stop with weft vs the reference bridge. */
export async function criBench(ctx: BenchContext): Promise<Row[]> {
  const skip = runtimeSkip(['containerd', 'containerd-shim-runc-v2', 'ctr', 'runc', 'nsenter', 'unshare', 'ip', 'iptables', 'tar'], ['/bin/busybox', join(REF_DIR, 'bridge'), join(REF_DIR, 'portmap')]);
  if (skip) {
    ctx.failures.push(`cri: cannot run: ${skip}`);
    return [];
  }
  const runs = intEnv('BENCH_CRI_RUNS', 15);
  const warmup = intEnv('BENCH_CRI_WARMUP', 2);
  const c = new Cleanup();
  const tag = uid();
  const cgroupParent = `/weft-bench-${tag}`;
  const dir = mkdtempSync(join(tmpdir(), 'weft-bench-cri-'));
  c.defer('remove temp dir', () => rmSync(dir, { recursive: true, force: true }));
  c.defer('remove cgroups', () => removeCgroupDirs(cgroupParent));
  try {
    const loadStart = await waitQuiet(ctx, 'CRI');
    ctx.notes.push(loadStart);
    const pause = buildBusyboxImage(join(dir, 'image'), `localhost/weft-bench/pause:${tag}`, ['sleep', '86400']);
    const sides: Side[] = [];
    for (const key of ['weft', 'ref'] as const) {
      const base = join(dir, key);
      const bin = join(base, 'bin');
      const netd = join(base, 'net.d');
      mkdirSync(bin, { recursive: true });
      mkdirSync(netd, { recursive: true });
      const ns = Netns.create(`wbcri${key[0]}`);
      c.defer(`delete netns ${ns.name}`, () => ns.destroy());
      const net = `wbcri${key}${tag}`;
      c.defer('remove cached CNI results', () => removeCniResults(net));
      for (const p of ['loopback', 'portmap']) linkOrCopy(join(REF_DIR, p), join(bin, p));
      let plugin: Record<string, unknown>;
      if (key === 'weft') {
        const router = new RouterProc(ns, [], join(base, 'router'));
        mkdirSync(router.dir, { recursive: true });
        c.defer('stop router', () => stopRouter(router));
        await router.start();
        installPlugin(bin);
        plugin = { type: 'weft-net', socket: router.socket };
        c.defer('no weft allocation left', () => {
          const left = podAttachments(router.report()).filter((a: { network: string }) => a.network === net);
          if (left.length) ctx.failures.push(`cri: weft still holds ${left.length} allocation(s) after every pod was removed`);
        });
      } else {
        for (const p of ['bridge', 'host-local']) linkOrCopy(join(REF_DIR, p), join(bin, p));
        plugin = { type: 'bridge', bridge: 'refbr0', isGateway: true, ipMasq: false, ipam: { type: 'host-local', subnet: '10.99.0.0/16', dataDir: join(base, 'ipam') } };
      }
      writeFileSync(
        join(netd, '10-bench.conflist'),
        JSON.stringify({ cniVersion: '1.0.0', name: net, plugins: [plugin, { type: 'portmap', capabilities: { portMappings: true }, snat: true }] }),
      );
      const ctrd = await Containerd.start(ns, join(base, 'containerd'), { cri: { sandboxImage: pause.ref, binDir: bin, confDir: netd } });
      c.defer(`stop containerd (${key})`, () => ctrd.stop([K8S_NS]));
      ctrd.ctr(K8S_NS, ['image', 'import', pause.tar], 120_000);
      const cri = new CriClient(ctrd.socket);
      c.defer('close CRI client', () => cri.close());
      await waitFor('CRI NetworkReady', async () => (await cri.status()).some((x) => x.type === 'NetworkReady' && x.status), 30_000, 200);
      sides.push({ key, ns, cri, net, run: [], stop: [], stopOnly: [], removeOnly: [], failures: [] });
    }
    ctx.progress(`bench: cri: ${runs} pods (+${warmup} warm-up) per side, alternating`);
    for (let i = -warmup; i < runs; i++) {
      ctx.signal.throwIfAborted();
      for (const s of i % 2 ? [...sides].reverse() : sides) {
        const metadata = { name: `bench-${s.key}-${i + warmup}`, uid: randomUUID(), namespace: 'weft-bench', attempt: 0 };
        let id: string | undefined;
        try {
          const t0 = performance.now();
          id = await s.cri.runPodSandbox({ metadata, cgroupParent });
          const t1 = performance.now();
          await s.cri.stopPodSandbox(id);
          const tStop = performance.now();
          await s.cri.removePodSandbox(id);
          const t2 = performance.now();
          if (i >= 0) {
            s.run.push(t1 - t0);
            s.stop.push(t2 - t1);
            s.stopOnly.push(tStop - t1);
            s.removeOnly.push(t2 - tStop);
          }
        } catch (e) {
          s.failures.push(`${s.key} pod ${i}: ${(e as Error).message}`);
          if (id) {
            await s.cri.stopPodSandbox(id).catch(() => undefined);
            await s.cri.removePodSandbox(id).catch(() => undefined);
          }
        }
      }
      if (i % 5 === 0) ctx.progress(`bench: cri: ${i + 1}/${runs}`);
    }
    for (const s of sides) ctx.failures.push(...s.failures.map((f) => `cri: ${f}`));
    const [w, r] = sides as [Side, Side];
    const cmd = (what: string) => `CriClient.${what} against containerd (CRI, portmap chained), conflist weft-net  vs  bridge+host-local (ipMasq false); alternating, one pod at a time`;
    ctx.json.samples = { weft: { run: w.run.map((x) => round(x)), stopRemove: w.stop.map((x) => round(x)) }, ref: { run: r.run.map((x) => round(x)), stopRemove: r.stop.map((x) => round(x)) } };
    ctx.notes.unshift(
      `${runs} pods per side (+${warmup} warm-up), the two containerds used in turn; each pod RunPodSandbox, then StopPodSandbox + RemovePodSandbox, timed around the gRPC calls. ` +
        `Ratio = weft / reference (goal of issue 11: at most 1.25).`,
    );
    ctx.notes.push(`medians: RunPodSandbox weft ${median(w.run).toFixed(1)} ms, reference ${median(r.run).toFixed(1)} ms; Stop+Remove weft ${median(w.stop).toFixed(1)} ms, reference ${median(r.stop).toFixed(1)} ms`);
    return [
      row('CRI RunPodSandbox median (ms)', 'ms', w.run, r.run, median, cmd('runPodSandbox')),
      row('CRI StopPodSandbox + RemovePodSandbox median (ms)', 'ms', w.stop, r.stop, median, cmd('stopPodSandbox + removePodSandbox')),
      row('    of which StopPodSandbox (CNI DEL of the chain, the pause container stopped), median (ms)', 'ms', w.stopOnly, r.stopOnly, median, cmd('stopPodSandbox')),
      row('    of which RemovePodSandbox (containerd 1.6 runs the chain DEL again, with no namespace; the sandbox removed), median (ms)', 'ms', w.removeOnly, r.removeOnly, median, cmd('removePodSandbox')),
    ];
  } finally {
    const errors = await c.run();
    for (const e of errors) ctx.failures.push(`cri: ${e.message}`);
  }
}

