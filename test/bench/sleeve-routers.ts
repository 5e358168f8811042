/**
 * The sleeve part's real-router half (`BENCH_ONLY=sleeve`, unless BENCH_SLEEVE_ROUTERS=0): two
 * sandboxes of 3 hosts with real `dist/weft` routers and pods attached by `dist/weft-net`, one
 * with a password (`--password-file`), one without. iperf3 from the pod on host 1 to the pod
 * on host 2, one TCP stream, paths in one run:
 *   r-kernel      no password: kernel VXLAN (fastdp), pod MTU 1450, the reference
 *   r-enc         password: the sleeve, encrypted, pod MTU 65000
 *   r-enc-via     the same with hosts 1 and 2 cut off from each other on the underlay: through host 3
 *   r-plain       no password, UDP 6784 blocked between hosts 1 and 2: the plain sleeve fallback (pod MTU 1450)
 *   r-plain-via   no password, hosts 1 and 2 cut off: the plain sleeve through host 3
 * Cuts are nft rules on the underlay bridge (in its namespace); each path waits (bounded) until
 * host 1's router reports the path it measures. Nothing is asserted; both sandboxes are removed.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Sandbox } from '../../src/sandbox';
import { run } from '../../src/sys/exec';
import { netnsPath } from '../../src/sandbox/types';
import { WEFT, WEFT_NET } from '../helpers/netns';
import { type BenchContext, type Row, row } from './common';
import { median, round } from './stats';
import { iperf, type IperfResult } from './throughput';

type Key = 'r-kernel' | 'r-enc' | 'r-enc-via' | 'r-plain' | 'r-plain-via';
/** Mesh timings that notice a cut within seconds; programming and repair keep their defaults (5 s): each pass spawns processes from the relay's own event loop. */
const FAST = { WEFT_PROBE_MS: '2000', WEFT_HEARTBEAT_MS: '1000', WEFT_RETRY_MIN_MS: '200', WEFT_RETRY_MAX_MS: '1000' };

/** Cuts (all traffic, or UDP 6784 only) between underlay hosts 1 and 2 of `sb`, or lifts the cut. */
async function cut(sb: Sandbox, how: 'none' | 'all' | 'vxlan'): Promise<void> {
  const ns = { netns: netnsPath(sb.underlayNetns) };
  await run('nft', ['delete', 'table', 'bridge', 'wbrcut'], ns).catch(() => undefined);
  if (how === 'none') return;
  const [a, b] = [sb.host(1).address, sb.host(2).address];
  const m = how === 'vxlan' ? ' udp dport 6784' : '';
  await run('nft', ['-f', '-'], { ...ns, input: `table bridge wbrcut {\n chain c {\n  type filter hook forward priority 0;\n  ip saddr ${a} ip daddr ${b}${m} drop\n  ip saddr ${b} ip daddr ${a}${m} drop\n }\n}\n` });
}

/** Waits (at most `ms`) until host 1's router carries host 2 as `want` says. */
async function waitPath(sb: Sandbox, want: { datapath: string; via: boolean }, ms: number): Promise<boolean> {
  const peer = (await sb.report(2)).router.name;
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const c = (await sb.report(1)).mesh.connections.find((x: any) => x.peer === peer);
    if (c && c.datapath === want.datapath && !!c.via === want.via) return true;
    await new Promise((r) => setTimeout(r, 250));
  }
  return false;
}

export async function sleeveRouterRows(ctx: BenchContext, reps: number, seconds: number): Promise<Row[]> {
  const tag = randomBytes(2).toString('hex');
  const dir = mkdtempSync(join(tmpdir(), 'weft-bsr-'));
  const pw = join(dir, 'password');
  writeFileSync(pw, 'bench secret\n');
  const saved = Object.fromEntries(Object.keys(FAST).map((k) => [k, process.env[k]]));
  Object.assign(process.env, FAST);
  const enc = new Sandbox({ prefix: `wbre${tag}`, log: (l) => ctx.progress(`bench: [enc] ${l.trim()}`) });
  const plain = new Sandbox({ prefix: `wbrp${tag}`, log: (l) => ctx.progress(`bench: [plain] ${l.trim()}`) });
  try {
    const base = { hosts: 3, pods: 1, weft: WEFT, plugin: WEFT_NET, deadlineMs: 60_000, matrix: false };
    await enc.up({ ...base, passwordFile: pw }, ctx.signal);
    await plain.up(base, ctx.signal);
    const paths: { key: Key; sb: Sandbox; cut: 'none' | 'all' | 'vxlan'; want: { datapath: string; via: boolean } }[] = [
      { key: 'r-kernel', sb: plain, cut: 'none', want: { datapath: 'fastdp', via: false } },
      { key: 'r-enc', sb: enc, cut: 'none', want: { datapath: 'sleeve', via: false } },
      { key: 'r-enc-via', sb: enc, cut: 'all', want: { datapath: 'sleeve', via: true } },
      { key: 'r-plain', sb: plain, cut: 'vxlan', want: { datapath: 'sleeve', via: false } },
      { key: 'r-plain-via', sb: plain, cut: 'all', want: { datapath: 'sleeve', via: true } },
    ];
    const samples = Object.fromEntries(paths.map((p) => [p.key, [] as IperfResult[]])) as Record<Key, IperfResult[]>;
    for (let i = 0; i < reps; i++) {
      for (const p of [...paths.slice(i % paths.length), ...paths.slice(0, i % paths.length)]) {
        ctx.signal.throwIfAborted();
        await cut(p.sb, p.cut);
        if (!(await waitPath(p.sb, p.want, 60_000))) {
          ctx.failures.push(`sleeve routers ${p.key} #${i}: host 1 did not carry host 2 as ${JSON.stringify(p.want)} within 60 s`);
          continue;
        }
        const [c, s] = [p.sb.podsOf(1)[0]!, p.sb.podsOf(2)[0]!];
        const ok = await p.sb.ping(c, s, 5);
        if (!ok) ctx.failures.push(`sleeve routers ${p.key} #${i}: ping ${s.address} failed before the run`);
        const r = await iperf({ serverNs: s.name, clientNs: c.name, addr: s.address! }, seconds, ctx.signal);
        if (r.error) ctx.failures.push(`sleeve routers ${p.key} #${i}: ${r.error}`);
        samples[p.key].push(r);
        ctx.progress(`bench: sleeve routers #${i} ${p.key.padEnd(11)} ${r.gbps !== undefined ? `${r.gbps.toFixed(2)} Gbit/s, ${r.retransmits ?? '?'} retransmits` : r.error}`);
      }
    }
    await cut(enc, 'none');
    await cut(plain, 'none');
    const g = (k: Key) => samples[k].filter((r) => r.gbps !== undefined).map((r) => r.gbps!);
    const cmd = (k: Key) => samples[k][0]?.cmd ?? '(none)';
    const rows: Row[] = [];
    const vs = (a: Key, b: Key, title: string) => g(a).length && g(b).length && rows.push(row(`TCP throughput median (Gbit/s), real routers: ${title}`, 'Gbit/s', g(a), g(b), median, `${cmd(a)}  vs  ${cmd(b)}`));
    vs('r-enc', 'r-kernel', 'sleeve encrypted (pod MTU 65000) vs kernel VXLAN (no password, pod MTU 1450)');
    vs('r-enc-via', 'r-enc', 'sleeve encrypted through one intermediate host vs direct');
    vs('r-plain', 'r-kernel', 'sleeve plain fallback, UDP 6784 blocked (pod MTU 1450) vs kernel VXLAN');
    vs('r-plain-via', 'r-plain', 'sleeve plain through one intermediate host vs direct');
    ctx.notes.push(
      `real routers: \`weft sandbox up --hosts 3 --pods 1 [--password-file F]\` (router env ${Object.entries(FAST).map(([k, v]) => `${k}=${v}`).join(' ')}); cuts: nft on the underlay bridge between hosts 1 and 2. Samples: ${paths.map((p) => `${p.key} ${g(p.key).map((x) => x.toFixed(2)).join(', ')}`).join('; ')}`,
    );
    ctx.json.routers = Object.fromEntries(paths.map((p) => [p.key, samples[p.key].map((r) => ({ gbps: r.gbps === undefined ? null : round(r.gbps), retransmits: r.retransmits ?? null, error: r.error ?? null }))]));
    return rows;
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    await enc.down().catch((e) => ctx.failures.push(`sleeve routers: down (enc): ${(e as Error).message}`));
    await plain.down().catch((e) => ctx.failures.push(`sleeve routers: down (plain): ${(e as Error).message}`));
    rmSync(dir, { recursive: true, force: true });
  }
}
