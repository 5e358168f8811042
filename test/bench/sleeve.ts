/**
 * `BENCH_ONLY=sleeve npm run bench`: the sleeve (the routers' own data path) against kernel
 * VXLAN, encrypted against plain, direct against through one intermediate host, all in one run.
 *
 * Three hosts of test/helpers/sleeve-fixture.ts (no routers: the sleeve driven directly, keys
 * from real handshakes). Paths, iperf3 from a pod on host 1 to a pod on host 2, one TCP stream:
 *   vxlan-std     kernel VXLAN made here (bridge kvx, VNI 42, UDP 4789), pods at the underlay MTU - 50:
 *                 what fastdp does, the reference
 *   vxlan-65000   the same with pods and VXLAN at MTU 65000 (the underlay fragments)
 *   enc / plain   the sleeve encrypted (AES-256-GCM) / without a secret, pods at MTU 65000, over its
 *                 default carrier (a TCP stream per hop, stream.ts)
 *   enc-udp / plain-udp  the same over UDP datagrams (--sleeve-carrier udp)
 *   *-via3        the same, routed 1 -> 3 -> 2 (host 3 relays; nothing blocked)
 *   enc-std, plain-std  the sleeve with pods at the underlay MTU - 50: the per-datagram cost (plain-std
 *                 is the fallback for a peer whose VXLAN probe fails, without a secret)
 *   bare-enc, bare-plain  the sleeve's kernel half with issue 8's minimal relay in place of weft's
 *                 (sleeve-host.ts `bare`), pods at MTU 65000: the reference for the relay's own cost
 *   bare-tcp-enc, bare-tcp-plain  the same minimal relay with a TCP connection per peer as its carrier
 * Rounds repeat and rotate the order; the sleeve switches between encrypted and plain by
 * restarting the overlays. Also an in-process AEAD comparison (the reason for AES-256-GCM).
 * Nothing is asserted; everything is removed in `finally`.
 *
 * Env: BENCH_SLEEVE_REPS (3), BENCH_SLEEVE_SECONDS (5), BENCH_SLEEVE_UNDERLAY_MTU (1500; 9000 for jumbo
 * frames: fewer fragments per datagram), BENCH_SLEEVE_PATHS (keys above, comma-separated; default all),
 * BENCH_SLEEVE_ROUTERS=0 / BENCH_SLEEVE_FIXTURE=0 (skip the real routers, sleeve-routers.ts, run first / the fixture).
 */
import { createCipheriv, randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { Netns } from '../helpers/netns';
import { SleeveFixture, UNDERLAY_NET, podIp } from '../helpers/sleeve-fixture';
import { type BenchContext, type Row, row, shown, waitQuiet, loadNow } from './common';
import { median, round } from './stats';
import { iperf, intEnv, type IperfResult } from './throughput';
import { sleeveRouterRows } from './sleeve-routers';

const BIG = 0; // fixture pod index, MTU 65000
const STD = 1; // MTU underlay - 50 (1450)
type Key = 'vxlan-std' | 'vxlan-65000' | 'enc' | 'enc-via3' | 'enc-std' | 'plain' | 'plain-via3' | 'plain-std' | 'bare-enc' | 'bare-plain' | 'bare-tcp-enc' | 'bare-tcp-plain' | 'enc-udp' | 'plain-udp';
type Mode = 'kernel' | 'enc' | 'plain' | 'enc-udp' | 'plain-udp' | 'bare-enc' | 'bare-plain' | 'bare-tcp-enc' | 'bare-tcp-plain';
const KVX_NET = '10.33';

interface Path {
  key: Key;
  mode: Mode;
  via3: boolean;
  serverNs: string;
  clientNs: string;
  addr: string;
}

/** Seals `size`-byte buffers for ~`ms` with `alg`; Gbit/s of plaintext sealed. */
function sealRate(alg: string, size: number, ms: number): number {
  const key = randomBytes(32);
  const buf = randomBytes(size);
  const iv = Buffer.alloc(12);
  let n = 0;
  const t0 = process.hrtime.bigint();
  const limit = BigInt(ms) * 1_000_000n;
  let dt = 0n;
  while ((dt = process.hrtime.bigint() - t0) < limit) {
    iv.writeUInt32BE(++n, 8);
    const c = createCipheriv(alg, key, iv, { authTagLength: 16 } as never) as ReturnType<typeof createCipheriv> & { getAuthTag(): Buffer };
    c.update(buf);
    c.final();
    c.getAuthTag();
  }
  return (n * size * 8) / Number(dt);
}

function aeadRows(ctx: BenchContext): Row[] {
  const rows: Row[] = [];
  for (const size of [1400, 65000]) {
    const gcm: number[] = [];
    const chacha: number[] = [];
    for (let i = 0; i < 5; i++) {
      gcm.push(sealRate('aes-256-gcm', size, 300));
      chacha.push(sealRate('chacha20-poly1305', size, 300));
    }
    ctx.notes.push(`AEAD seal, ${size} bytes (Gbit/s): aes-256-gcm ${gcm.map((x) => x.toFixed(2)).join(', ')}; chacha20-poly1305 ${chacha.map((x) => x.toFixed(2)).join(', ')}`);
    rows.push(row(`AEAD seal (Gbit/s, one core, new cipher per datagram), AES-256-GCM vs ChaCha20-Poly1305, ${size}-byte datagrams`, 'Gbit/s', gcm, chacha, median, 'in-process node:crypto createCipheriv, 5 x 300 ms each, interleaved'));
  }
  return rows;
}

/** A kernel VXLAN of our own beside the sleeve: bridge kvx with its own pods (MTU 65000 and underlay - 50). */
function kernelVxlan(f: SleeveFixture, made: Netns[]): string[] {
  const cmds: string[] = [];
  for (const h of f.hosts) {
    const x = (args: string[]) => {
      h.ns.run('ip', args);
      cmds.push(`ip ${args.join(' ')}`);
    };
    x(['link', 'add', 'kvx', 'mtu', '65000', 'type', 'bridge']);
    x(['link', 'set', 'kvx', 'up']);
    x(['link', 'add', 'kvx-vx', 'type', 'vxlan', 'id', '42', 'dstport', '4789', 'local', h.ip]);
    x(['link', 'set', 'kvx-vx', 'mtu', '65000', 'master', 'kvx', 'up']);
    for (const o of f.hosts) if (o !== h) h.ns.run('bridge', ['fdb', 'append', '00:00:00:00:00:00', 'dev', 'kvx-vx', 'dst', o.ip]);
    [65000, f.o.underlayMtu! - 50].forEach((mtu, k) => {
      const pod = Netns.create(`${f.o.prefix}k${h.index}${k}`);
      made.push(pod);
      h.ns.run('ip', ['link', 'add', `kv${k}`, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', String(mtu), 'netns', pod.name]);
      h.ns.run('ip', ['link', 'set', `kv${k}`, 'master', 'kvx', 'up']);
      pod.run('ip', ['addr', 'add', `${KVX_NET}.${k}.${h.index}/16`, 'dev', 'eth0']);
      pod.run('ip', ['link', 'set', 'eth0', 'up']);
    });
  }
  return cmds;
}

export async function sleeveBench(ctx: BenchContext): Promise<Row[]> {
  const reps = intEnv('BENCH_SLEEVE_REPS', 3, 1);
  const seconds = intEnv('BENCH_SLEEVE_SECONDS', 5, 1);
  const underlayMtu = intEnv('BENCH_SLEEVE_UNDERLAY_MTU', 1500, 1280);
  const rows: Row[] = aeadRows(ctx);
  if (process.env.BENCH_SLEEVE_ROUTERS !== '0') rows.push(...(await sleeveRouterRows(ctx, reps, seconds)));
  if (process.env.BENCH_SLEEVE_FIXTURE === '0') return rows;
  const made: Netns[] = [];
  const f = await SleeveFixture.up({ hosts: 3, prefix: `wbs${randomBytes(2).toString('hex')}`, encrypted: true, pods: [{ mtu: 65000 }, { mtu: underlayMtu - 50 }], underlayMtu });
  try {
    const kvx = kernelVxlan(f, made);
    const pod = (h: number, k: number) => f.hosts[h - 1]!.pods[k]!.name;
    const kpod = (h: number, k: number) => `${f.o.prefix}k${h}${k}`;
    const kvxPod = (h: number, k: number) => made.find((n) => n.name.startsWith(`${kpod(h, k)}-`))!.name;
    const paths: Path[] = [
      { key: 'vxlan-std', mode: 'kernel', via3: false, serverNs: kvxPod(2, 1), clientNs: kvxPod(1, 1), addr: `${KVX_NET}.1.2` },
      { key: 'vxlan-65000', mode: 'kernel', via3: false, serverNs: kvxPod(2, 0), clientNs: kvxPod(1, 0), addr: `${KVX_NET}.0.2` },
      { key: 'enc', mode: 'enc', via3: false, serverNs: pod(2, BIG), clientNs: pod(1, BIG), addr: podIp(2, BIG) },
      { key: 'enc-via3', mode: 'enc', via3: true, serverNs: pod(2, BIG), clientNs: pod(1, BIG), addr: podIp(2, BIG) },
      { key: 'enc-std', mode: 'enc', via3: false, serverNs: pod(2, STD), clientNs: pod(1, STD), addr: podIp(2, STD) },
      { key: 'plain', mode: 'plain', via3: false, serverNs: pod(2, BIG), clientNs: pod(1, BIG), addr: podIp(2, BIG) },
      { key: 'plain-via3', mode: 'plain', via3: true, serverNs: pod(2, BIG), clientNs: pod(1, BIG), addr: podIp(2, BIG) },
      { key: 'plain-std', mode: 'plain', via3: false, serverNs: pod(2, STD), clientNs: pod(1, STD), addr: podIp(2, STD) },
      { key: 'bare-enc', mode: 'bare-enc', via3: false, serverNs: pod(2, BIG), clientNs: pod(1, BIG), addr: podIp(2, BIG) },
      { key: 'bare-plain', mode: 'bare-plain', via3: false, serverNs: pod(2, BIG), clientNs: pod(1, BIG), addr: podIp(2, BIG) },
      { key: 'enc-udp', mode: 'enc-udp', via3: false, serverNs: pod(2, BIG), clientNs: pod(1, BIG), addr: podIp(2, BIG) },
      { key: 'plain-udp', mode: 'plain-udp', via3: false, serverNs: pod(2, BIG), clientNs: pod(1, BIG), addr: podIp(2, BIG) },
      { key: 'bare-tcp-enc', mode: 'bare-tcp-enc', via3: false, serverNs: pod(2, BIG), clientNs: pod(1, BIG), addr: podIp(2, BIG) },
      { key: 'bare-tcp-plain', mode: 'bare-tcp-plain', via3: false, serverNs: pod(2, BIG), clientNs: pod(1, BIG), addr: podIp(2, BIG) },
    ];
    const only = (process.env.BENCH_SLEEVE_PATHS ?? '').split(',').filter(Boolean);
    if (only.length) paths.splice(0, paths.length, ...paths.filter((p) => only.includes(p.key)));
    const samples = Object.fromEntries(paths.map((p) => [p.key, [] as IperfResult[]])) as Record<Key, IperfResult[]>;
    let current: Mode = 'enc';
    let via3 = false;
    const setMode = async (m: Mode) => {
      if (m === 'kernel' || m === current) return;
      if (!m.startsWith('bare')) await f.setEncrypted(m.startsWith('enc'), m.endsWith('-udp') ? 'udp' : 'tcp');
      else for (const h of f.hosts) await f.call(h.index, 'bare', { encrypted: m.endsWith('-enc'), tcp: m.startsWith('bare-tcp') });
      current = m;
    };
    const setVia3 = async (on: boolean) => {
      if (on === via3) return;
      await f.routes(1, { 2: on ? 3 : 2 });
      await f.routes(2, { 1: on ? 3 : 1 });
      via3 = on;
    };
    ctx.notes.push(await waitQuiet(ctx, 'sleeve'));
    const groups: Mode[] = ['kernel', 'enc', 'plain', 'enc-udp', 'plain-udp', 'bare-enc', 'bare-plain', 'bare-tcp-enc', 'bare-tcp-plain'];
    for (let i = 0; i < reps; i++) {
      for (const mode of [...groups.slice(i % groups.length), ...groups.slice(0, i % groups.length)]) {
        await setMode(mode);
        for (const p of paths.filter((x) => x.mode === mode)) {
          ctx.signal.throwIfAborted();
          await setVia3(p.via3);
          const warm = spawnSync('nsenter', [`--net=/var/run/netns/${p.clientNs}`, '--', 'ping', '-c', '3', '-W', '2', '-i', '0.3', p.addr], { encoding: 'utf8', timeout: 20_000 });
          if (warm.status !== 0) ctx.failures.push(`sleeve ${p.key} #${i}: ping ${p.addr} failed before the run`);
          const r = await iperf(p, seconds, ctx.signal);
          if (r.error) ctx.failures.push(`sleeve ${p.key} #${i}: ${r.error}`);
          samples[p.key].push(r);
          ctx.progress(`bench: sleeve #${i} ${p.key.padEnd(11)} ${r.gbps !== undefined ? `${r.gbps.toFixed(2)} Gbit/s, ${r.retransmits ?? '?'} retransmits` : r.error}`);
        }
      }
    }
    await setVia3(false);
    await setMode('enc');
    const g = (k: Key) => (samples[k] ?? []).filter((r) => r.gbps !== undefined).map((r) => r.gbps!);
    const cmd = (k: Key) => samples[k]?.[0]?.cmd ?? '(none)';
    const vs = (a: Key, b: Key, title: string) => g(a).length && g(b).length && rows.push(row(`TCP throughput median (Gbit/s), ${title}`, 'Gbit/s', g(a), g(b), median, `${cmd(a)}  vs  ${cmd(b)}`));
    const std = underlayMtu - 50;
    vs('enc', 'vxlan-std', `sleeve encrypted (pod MTU 65000) vs kernel VXLAN (pod MTU ${std}, as fastdp)`);
    vs('enc', 'enc-udp', 'sleeve encrypted, TCP carrier (default) vs UDP carrier (--sleeve-carrier udp), pod MTU 65000');
    vs('plain', 'plain-udp', 'sleeve plain, TCP carrier vs UDP carrier, pod MTU 65000');
    vs('enc', 'bare-tcp-enc', 'sleeve encrypted vs the minimal relay encrypted over a TCP connection (same kernel half), pod MTU 65000');
    vs('enc-udp', 'bare-enc', 'sleeve encrypted over UDP vs the minimal relay encrypted over UDP (issue 8\'s experiment, same kernel half), pod MTU 65000');
    vs('plain-udp', 'bare-plain', 'sleeve plain over UDP vs the minimal relay plain over UDP (same kernel half), pod MTU 65000');
    vs('plain', 'bare-tcp-plain', 'sleeve plain vs the minimal relay plain over a TCP connection (same kernel half), pod MTU 65000');
    vs('bare-enc', 'vxlan-std', `the minimal relay encrypted vs kernel VXLAN (pod MTU ${underlayMtu - 50})`);
    vs('enc', 'plain', 'sleeve encrypted vs sleeve plain, pod MTU 65000');
    vs('enc-via3', 'enc', 'sleeve encrypted through one intermediate host vs direct');
    vs('plain-via3', 'plain', 'sleeve plain through one intermediate host vs direct');
    vs('plain', 'vxlan-std', `sleeve plain (pod MTU 65000) vs kernel VXLAN (pod MTU ${std})`);
    vs('enc-std', 'enc', `sleeve encrypted with pod MTU ${std} vs pod MTU 65000`);
    vs('plain-std', 'vxlan-std', `sleeve plain at pod MTU ${std} (fallback for a peer whose VXLAN probe fails) vs kernel VXLAN`);
    vs('vxlan-65000', 'vxlan-std', `kernel VXLAN at MTU 65000 (underlay fragments) vs MTU ${std}`);
    const each = (k: Key) => g(k).map((x) => x.toFixed(2)).join(', ');
    const retr = (k: Key) => samples[k].map((r) => r.retransmits ?? '?').join('/');
    ctx.notes.push(`samples (Gbit/s, run order): ${paths.map((p) => `${p.key} ${each(p.key)}`).join('; ')}. Retransmits: ${paths.map((p) => `${p.key} ${retr(p.key)}`).join('; ')}. Load average after: ${loadNow().join(' ')}.`);
    ctx.notes.push(
      `Underlay MTU ${underlayMtu} (${UNDERLAY_NET}.0/24 on a bridge in its own namespace); sleeve inner MTU 65000; "via3" = routes 1 -> 3 -> 2 set in the sleeves (host 3 relays). ` +
        `Kernel VXLAN reference: ${kvx.slice(0, 4).join('; ')}; ... (per host; pods ${KVX_NET}.K.H/16). iperf3 server: \`${shown('SERVER_NS', 'iperf3', ['-s', '-1', '-p', '5201'])}\`.`,
    );
    ctx.json.samples = Object.fromEntries(paths.map((p) => [p.key, samples[p.key].map((r) => ({ gbps: r.gbps === undefined ? null : round(r.gbps), retransmits: r.retransmits ?? null, error: r.error ?? null, cmd: r.cmd }))]));
    ctx.json.counters = { host1: await f.counters(1), host3: await f.counters(3) };
    return rows;
  } finally {
    await f.down();
    for (const n of made) n.destroy();
  }
}
