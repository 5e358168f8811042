/**
 * TCP throughput between pods on two hosts through weft, next to the underlay itself and a
 * hand-built kernel VXLAN between the same two host namespaces, all in one run.
 *
 * A sandbox of its own (prefix wbt + random: 2 hosts on an underlay bridge inside a namespace,
 * a router each, one pod each attached by dist/weft-net), then iperf3 three ways, interleaved
 * and repeated (the median is reported):
 *   weft      pod on host1 -> pod on host2, the pods' own addresses (veth, bridge, weft's VXLAN)
 *   underlay  host1 netns -> host2 netns on 172.30.0.x (veth, underlay bridge, veth)
 *   vxlan     host1 netns -> host2 netns over a VXLAN device made here (vxbench, VNI 4242,
 *             UDP 4789, MTU underlay-50, 192.168.250.1/24 and .2/24), deleted afterwards
 * Then again with a jumbo underlay (MTU 9000), where Weave's fixed 1376 lost most.
 *
 * Everything lives in the sandbox's namespaces and goes with them in `finally`; iperf3 servers
 * are children of this process, killed by pid. Nothing is asserted.
 *
 * Env: BENCH_TP_REPS (3), BENCH_TP_SECONDS (5), BENCH_TP_MTUS (1500,9000).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { Sandbox, type SandboxHost, type SandboxPod } from '../../src/sandbox';
import { WEFT, WEFT_NET, uid } from '../helpers/netns';
import { sleep } from '../../src/sandbox/pool';
import { type BenchContext, type Row, loadNow, row, runInNetns, shown, waitQuiet } from './common';
import { median, round } from './stats';

const RAW_DEV = 'vxbench';
const RAW_VNI = 4242;
const RAW_PORT = 4789;
const RAW_NET = '192.168.250';
const IPERF_PORT = 5201;

export function intEnv(name: string, dflt: number, min: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  if (!/^\d+$/.test(v) || Number(v) < min) throw new Error(`${name}="${v}": expected a whole number >= ${min}`);
  return Number(v);
}

function mtusEnv(): number[] {
  const v = process.env.BENCH_TP_MTUS ?? '1500,9000';
  const out = v.split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  if (!out.length || out.some((m) => !Number.isInteger(m) || m < 626 || m > 65535)) throw new Error(`BENCH_TP_MTUS="${v}": expected MTUs 626..65535, comma-separated`);
  return out;
}

type PathKey = 'weft' | 'underlay' | 'vxlan';

interface Path {
  key: PathKey;
  label: string;
  serverNs: string;
  clientNs: string;
  addr: string;
}

export interface IperfResult {
  cmd: string;
  gbps?: number;
  retransmits?: number;
  cpu?: { host_total?: number; remote_total?: number };
  error?: string;
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    child.once('close', () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

/** One iperf3 run: a one-off server in `p.serverNs` (a child of ours), the client in `p.clientNs`. */
export async function iperf(p: Pick<Path, 'serverNs' | 'clientNs' | 'addr'>, seconds: number, signal: AbortSignal): Promise<IperfResult> {
  const args = ['-c', p.addr, '-t', String(seconds), '-J'];
  const cmd = shown(p.clientNs, 'iperf3', args);
  const server = spawn('nsenter', [`--net=/var/run/netns/${p.serverNs}`, '--', 'iperf3', '-s', '-1', '-p', String(IPERF_PORT)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let serverErr = '';
  server.stderr!.on('data', (b: Buffer) => (serverErr += b.toString('utf8')));
  let exited = false;
  server.on('close', () => (exited = true));
  server.on('error', (e) => ((serverErr += String(e)), (exited = true)));
  try {
    for (let k = 0; ; k++) {
      if (exited) return { cmd, error: `iperf3 server in ${p.serverNs} exited before listening: ${serverErr.trim() || '(no output)'}` };
      const ss = await runInNetns(p.serverNs, 'ss', ['-Hltn', `sport = :${IPERF_PORT}`], 5000);
      if (ss.stdout.trim()) break;
      if (k >= 100) return { cmd, error: `iperf3 server in ${p.serverNs} not listening after 5 s` };
      await sleep(50, signal);
    }
    const r = await runInNetns(p.clientNs, 'iperf3', args, (seconds + 30) * 1000);
    let j: any;
    try {
      j = JSON.parse(r.stdout);
    } catch {
      /* below */
    }
    if (!j) return { cmd, error: `iperf3 client: exit ${r.code ?? r.signal}${r.timedOut ? ' (timed out)' : ''}: ${(r.stderr || r.stdout).trim().slice(0, 300)}` };
    if (j.error) return { cmd, error: `iperf3 client: ${j.error}` };
    const bps = j.end?.sum_received?.bits_per_second;
    if (typeof bps !== 'number') return { cmd, error: 'iperf3 client: no end.sum_received.bits_per_second in its JSON' };
    return { cmd, gbps: bps / 1e9, retransmits: j.end?.sum_sent?.retransmits, cpu: j.end?.cpu_utilization_percent };
  } finally {
    if (!exited) {
      server.kill('SIGTERM');
      if (!(await waitExit(server, 3000))) {
        server.kill('SIGKILL');
        await waitExit(server, 3000);
      }
    }
  }
}

async function ipIn(netns: string, args: string[]): Promise<string> {
  const r = await runInNetns(netns, 'ip', args, 10_000);
  if (r.code !== 0) throw new Error(`ip netns exec ${netns} ip ${args.join(' ')}: ${r.stderr.trim() || `exit ${r.code ?? r.signal}`}`);
  return r.stdout;
}

async function linkMtu(netns: string, dev: string): Promise<number | undefined> {
  try {
    return (JSON.parse(await ipIn(netns, ['-j', 'link', 'show', dev])) as { mtu?: number }[])[0]?.mtu;
  } catch {
    return undefined;
  }
}

/** The hand-built VXLAN, one end in each host namespace. Returns the commands, for the notes. */
async function makeRawVxlan(h1: SandboxHost, h2: SandboxHost, mtu: number): Promise<string[]> {
  const shownCmds: string[] = [];
  for (const [me, other, n] of [
    [h1, h2, 1],
    [h2, h1, 2],
  ] as const) {
    const cmds = [
      ['link', 'add', RAW_DEV, 'type', 'vxlan', 'id', String(RAW_VNI), 'dstport', String(RAW_PORT), 'local', me.address, 'remote', other.address, 'dev', me.ifname],
      ['link', 'set', RAW_DEV, 'mtu', String(mtu - 50), 'up'],
      ['addr', 'add', `${RAW_NET}.${n}/24`, 'dev', RAW_DEV],
    ];
    for (const c of cmds) {
      await ipIn(me.netns, c);
      shownCmds.push(`ip -n ${me.netns} ${c.join(' ')}`);
    }
  }
  return shownCmds;
}

function rotate<T>(xs: T[], n: number): T[] {
  const k = ((n % xs.length) + xs.length) % xs.length;
  return [...xs.slice(k), ...xs.slice(0, k)];
}

/** One sandbox at one underlay MTU: every path `reps` times, interleaved. */
async function onePass(ctx: BenchContext, mtu: number, reps: number, seconds: number): Promise<Row[]> {
  const prefix = `wbt${uid()}`;
  const sb = new Sandbox({ prefix, log: (l) => ctx.progress(`bench: [${prefix}] ${l.trim()}`) });
  const tag = `underlay MTU ${mtu}`;
  const rows: Row[] = [];
  let madeRaw: SandboxHost[] = [];
  try {
    ctx.progress(`bench: throughput, ${tag}: sandbox ${prefix} (2 hosts, 1 pod each)`);
    await sb.up({ hosts: 2, pods: 1, mtu, weft: WEFT, plugin: WEFT_NET, deadlineMs: 60_000, matrix: false }, ctx.signal);
    const h1 = sb.host(1);
    const h2 = sb.host(2);
    const p1: SandboxPod | undefined = sb.podsOf(1)[0];
    const p2: SandboxPod | undefined = sb.podsOf(2)[0];
    if (!p1?.address || !p2?.address) throw new Error(`sandbox ${prefix}: a pod has no address (${p1?.cidr ?? '-'}, ${p2?.cidr ?? '-'})`);

    madeRaw = [h1, h2];
    const rawCmds = await makeRawVxlan(h1, h2, mtu);

    // what each path's MTU came out as
    const mtus = {
      underlay: await linkMtu(h1.netns, h1.ifname),
      podEth0: await linkMtu(p1.name, 'eth0'),
      weftVxlan: await linkMtu(h1.netns, 'vxlan-6784'),
      weftBridge: await linkMtu(h1.netns, 'weave'),
      routerReport: (await sb.report(1).catch(() => undefined))?.router?.mtu,
      rawVxlan: await linkMtu(h1.netns, RAW_DEV),
    };

    const paths: Path[] = [
      { key: 'weft', label: 'pod→pod through weft', serverNs: p2.name, clientNs: p1.name, addr: p2.address },
      { key: 'underlay', label: 'underlay host→host', serverNs: h2.netns, clientNs: h1.netns, addr: h2.address },
      { key: 'vxlan', label: 'hand-built kernel VXLAN host→host', serverNs: h2.netns, clientNs: h1.netns, addr: `${RAW_NET}.2` },
    ];
    // every path answers before anything is timed (ARP, VXLAN forwarding entries)
    for (const p of paths) {
      const ok = await runInNetns(p.clientNs, 'ping', ['-c2', '-W1', '-n', '-q', p.addr], 10_000);
      if (ok.code !== 0) ctx.failures.push(`throughput ${tag}: ${p.label}: ping ${p.addr} from ${p.clientNs} failed before the runs: ${ok.stdout.trim().split('\n').pop()}`);
    }

    ctx.notes.push(await waitQuiet(ctx, `throughput, ${tag}`));
    const samples: Record<PathKey, IperfResult[]> = { weft: [], underlay: [], vxlan: [] };
    for (let i = 0; i < reps; i++) {
      for (const p of rotate(paths, i)) {
        ctx.signal.throwIfAborted();
        const r = await iperf(p, seconds, ctx.signal);
        if (r.error) ctx.failures.push(`throughput ${tag}: ${p.label} #${i}: ${r.error}`);
        samples[p.key].push(r);
        ctx.progress(`bench: throughput ${tag} #${i} ${p.key.padEnd(8)} ${r.gbps !== undefined ? `${r.gbps.toFixed(2)} Gbit/s, ${r.retransmits ?? '?'} retransmits` : r.error}`);
      }
    }
    const loadAfter = loadNow();

    const g = (k: PathKey) => samples[k].filter((r) => r.gbps !== undefined).map((r) => r.gbps!);
    const cmd = (k: PathKey) => samples[k][0]?.cmd ?? '(none)';
    const vs = (a: PathKey, b: PathKey) => `${cmd(a)}  vs  ${cmd(b)}`;
    rows.push(row(`TCP throughput median (Gbit/s), weft pod→pod vs underlay host→host, ${tag}`, 'Gbit/s', g('weft'), g('underlay'), median, vs('weft', 'underlay')));
    rows.push(row(`TCP throughput median (Gbit/s), weft pod→pod vs hand-built kernel VXLAN host→host, ${tag}`, 'Gbit/s', g('weft'), g('vxlan'), median, vs('weft', 'vxlan')));
    rows.push(row(`TCP throughput median (Gbit/s), hand-built kernel VXLAN vs underlay (no weft involved), ${tag}`, 'Gbit/s', g('vxlan'), g('underlay'), median, vs('vxlan', 'underlay')));
    if (mtus.podEth0 !== undefined && mtus.underlay !== undefined) {
      rows.push(row(`pod eth0 MTU (bytes) vs underlay MTU − 50, ${tag}`, 'bytes', [mtus.podEth0], [mtus.underlay - 50], median, `ip netns exec ${p1.name} ip -j link show eth0  vs  ip netns exec ${h1.netns} ip -j link show ${h1.ifname}`));
    }

    const retr = (k: PathKey) => samples[k].map((r) => r.retransmits ?? '?').join('/');
    const each = (k: PathKey) => g(k).map((x) => x.toFixed(2)).join(', ');
    ctx.notes.push(
      `${tag}: samples (Gbit/s, in run order within each path): weft ${each('weft')}; underlay ${each('underlay')}; vxlan ${each('vxlan')}. ` +
        `TCP retransmits per run: weft ${retr('weft')}; underlay ${retr('underlay')}; vxlan ${retr('vxlan')}. ` +
        `MTUs: underlay ${mtus.underlay}, pod eth0 ${mtus.podEth0}, weft's vxlan-6784 ${mtus.weftVxlan}, bridge weave ${mtus.weftBridge}, router report ${mtus.routerReport}, vxbench ${mtus.rawVxlan}. ` +
        `Load average after: ${loadAfter.join(' ')}.`,
    );
    ctx.notes.push(`${tag}: the hand-built VXLAN: ${rawCmds.join('; ')} (deleted after the runs). iperf3 servers: \`ip netns exec SERVER_NS iperf3 -s -1 -p ${IPERF_PORT}\`.`);
    ctx.json[`mtu${mtu}`] = {
      sandbox: prefix,
      mtus,
      rawVxlan: rawCmds,
      samples: Object.fromEntries(
        (Object.keys(samples) as PathKey[]).map((k) => [
          k,
          samples[k].map((r) => ({ gbps: r.gbps === undefined ? null : round(r.gbps), retransmits: r.retransmits ?? null, cpu: r.cpu ?? null, error: r.error ?? null, cmd: r.cmd })),
        ]),
      ),
    };
    return rows;
  } finally {
    for (const h of madeRaw) await runInNetns(h.netns, 'ip', ['link', 'del', RAW_DEV], 10_000);
    const d = await sb.down().catch((e: Error) => (ctx.failures.push(`throughput ${tag}: sandbox down: ${e.message}`), undefined));
    if (d?.failed.length) ctx.failures.push(`throughput ${tag}: namespaces not removed: ${d.failed.map((f) => `${f.netns}: ${f.error}`).join('; ')}`);
    if (d?.others.length) ctx.notes.push(`throughput ${tag}: processes left in removed namespaces: ${d.others.map((o) => `${o.pid} ${o.cmd}`).join('; ')}`);
  }
}

/** `npm run bench` part 2: iperf3 through weft vs the underlay vs a hand-built kernel VXLAN. */
export async function throughputBench(ctx: BenchContext): Promise<Row[]> {
  const reps = intEnv('BENCH_TP_REPS', 3, 1);
  const seconds = intEnv('BENCH_TP_SECONDS', 5, 1);
  const mtus = mtusEnv();
  const iperfVersion = (spawnSync('iperf3', ['--version'], { encoding: 'utf8', timeout: 5000 }).stdout ?? '').split('\n')[0]?.trim() || 'iperf3: not found';
  ctx.json.reps = reps;
  ctx.json.seconds = seconds;
  const rows: Row[] = [];
  for (const mtu of mtus) {
    try {
      rows.push(...(await onePass(ctx, mtu, reps, seconds)));
    } catch (e) {
      if (ctx.signal.aborted) throw e;
      ctx.failures.push(`throughput underlay MTU ${mtu}: ${(e as Error).message}`);
    }
  }
  ctx.notes.unshift(
    `${reps} runs of \`iperf3 -c ADDR -t ${seconds} -J\` per path, interleaved (the order rotates each round), one TCP stream each, ` +
      `figure = end.sum_received.bits_per_second; ratio = first / second figure. Client and server share this machine's CPUs with the kernel's ` +
      `forwarding of both ends, so these are CPU-bound figures of one machine, comparable only within a run. ${iperfVersion}.`,
  );
  return rows;
}
