/**
 * How fast a sandbox of N hosts converges: 32 hosts next to 16, one pod each; what routers cost.
 *
 * `Sandbox.up` (prefix wbc + random, deadlineMs 120000, no matrix) runs while this polls every
 * router's summary (GET /v1/summary, 250 ms apart) from the moment `up` is called:
 *   mesh   every router reports N peers and N-1 established connections
 *   ipam   every router reports ipam.status "ready" and every pod has an address (its ADD result)
 *   total  `up` returns (underlay, routers started one after another, API, mesh, pods)
 * then the ping matrix (every pair the neighbour table allows: the sandbox raises its limits),
 * the routers idle (BENCH_IDLE_SETTLE_S, 45) then measured over BENCH_IDLE_WINDOW_S (60): RSS
 * and CPU per router (a quiet router's passes stretch towards a minute, so the window is one), the gossip each sent; CPU of all routers at the full mesh; the tear-down.
 * Times are from the call of `up`, to the first poll that saw the state (an upper bound by at
 * most one poll). `up` attaches pods only after its own mesh wait, so `ipam` includes the mesh.
 *
 * Env: BENCH_CONVERGE_HOSTS (32,16: the first is the figure, the second its reference).
 */
import { Sandbox, type UpResult } from '../../src/sandbox';
import { WEFT, WEFT_NET, uid } from '../helpers/netns';
import { sleep } from '../../src/sandbox/pool';
import { type BenchContext, type Row, loadNow, row, waitQuiet } from './common';
import { cpuSeconds, gossipSent, idleFootprint, type Gossip, type Idle } from './footprint';
import { median, round } from './stats';

const DEADLINE_MS = 180_000;
const POLL_MS = 250;
const SETTLE_S = Number(process.env.BENCH_IDLE_SETTLE_S ?? 45);
const WINDOW_S = Number(process.env.BENCH_IDLE_WINDOW_S ?? 60);

interface Run {
  hosts: number;
  prefix: string;
  /** Seconds from the call of up; NaN when never seen. */
  meshS: number;
  ipamReadyS: number;
  podsS: number;
  ipamS: number;
  totalS: number;
  /** Seconds from the last router's start to the full mesh. */
  meshAfterRoutersS: number;
  downS: number;
  ping: { ok: number; pinged: number; totalPairs: number; crossHost: { ok: number; total: number }; sameHost: { ok: number; total: number }; duplicates: number; noBufferSpace: number; s: number };
  phases: UpResult['phases'];
  /** CPU seconds of all routers together when the full mesh was first seen. */
  cpuAtMeshS: number;
  /** Processes each router had started (by command) when the full mesh was first seen. */
  procsAtMesh: Record<string, number>[];
  /** Gossip each router had sent by the end of the idle window. */
  gossip: Gossip[];
  idle: Idle;
  neigh: UpResult['neigh'];
  lastSeen: string;
  polls: number;
  loadStart: string;
  loadEnd: number[];
}

function hostsEnv(): number[] {
  const v = process.env.BENCH_CONVERGE_HOSTS ?? '32,16';
  const out = v.split(',').map((s) => Number(s.trim()));
  if (!out.length || out.some((n) => !Number.isInteger(n) || n < 2 || n > 64)) throw new Error(`BENCH_CONVERGE_HOSTS="${v}": expected host counts 2..64, comma-separated`);
  return out;
}

const secs = (ms: number | undefined) => (ms === undefined ? NaN : ms / 1000);

async function oneRun(ctx: BenchContext, n: number): Promise<Run> {
  const prefix = `wbc${uid()}`;
  const sb = new Sandbox({ prefix, log: (l) => ctx.progress(`bench: [${prefix}] ${l.trim()}`) });
  const loadStart = await waitQuiet(ctx, `convergence, ${n} hosts`);
  ctx.progress(`bench: convergence: sandbox ${prefix}, ${n} hosts, 1 pod each`);
  let meshAt: number | undefined;
  let ipamReadyAt: number | undefined;
  let podsAt: number | undefined;
  let upDoneAt: number | undefined;
  let upFailed = false;
  let polls = 0;
  let lastSeen = '';
  let cpuAtMeshS = NaN;
  let procsAtMesh: Record<string, number>[] = [];
  const t0 = Date.now();
  const upP = sb.up({ hosts: n, pods: 1, weft: WEFT, plugin: WEFT_NET, deadlineMs: DEADLINE_MS, matrix: false }, ctx.signal).then(
    (r) => ((upDoneAt = Date.now() - t0), r),
    (e: unknown) => {
      upFailed = true;
      throw e;
    },
  );
  const poller = (async () => {
    // until both states are seen; after up has returned, at most 30 s more
    while (!upFailed && !ctx.signal.aborted && (meshAt === undefined || ipamReadyAt === undefined || podsAt === undefined)) {
      if (upDoneAt !== undefined && Date.now() - t0 > upDoneAt + 30_000) break;
      if (Date.now() - t0 > 3 * DEADLINE_MS + 60_000) break;
      const hosts = sb.hosts;
      if (hosts.length === n) {
        const rs = await sb.summaries(2000);
        polls++;
        const at = Date.now() - t0;
        const peers = rs.map((r) => (r instanceof Error ? undefined : r.peers));
        const est = rs.map((r) => (r instanceof Error ? undefined : r.established));
        const status = rs.map((r) => (r instanceof Error ? 'no answer' : r.ipam));
        const pods = sb.pods;
        if (meshAt === undefined && peers.every((p, i) => p !== undefined && p >= n && (est[i] ?? 0) >= n - 1)) {
          meshAt = at;
          cpuAtMeshS = sb.hosts.reduce((a, h) => a + (h.pid ? cpuSeconds(h.pid) : NaN), 0);
          procsAtMesh = (await sb.reports(2000)).map((r) => (r instanceof Error ? {} : (r.router.processesStarted ?? {})));
        }
        if (ipamReadyAt === undefined && status.every((s) => s === 'ready')) ipamReadyAt = at;
        if (podsAt === undefined && pods.length === n && pods.every((p) => p.address)) podsAt = at;
        lastSeen = `peers/established ${peers.map((p, i) => `${p ?? '?'}/${est[i] ?? '?'}`).join(' ')}; ipam ${[...new Set(status)].join(', ')}; pods addressed ${pods.filter((p) => p.address).length}/${n}`;
      }
      await sleep(POLL_MS, ctx.signal).catch(() => undefined);
    }
  })();
  let up: UpResult | undefined;
  try {
    try {
      up = await upP;
    } finally {
      await poller;
    }
    const totalMs = Date.now() - t0;
    const routersStarted = up.phases.filter((p) => p.name === 'underlay' || p.name === 'routers').reduce((a, p) => a + p.ms, 0);
    if (!up.mesh.complete) ctx.failures.push(`convergence ${n} hosts: Sandbox.up says the mesh is incomplete: ${up.mesh.reason}`);
    if (meshAt === undefined) ctx.failures.push(`convergence ${n} hosts: never saw a full mesh in ${polls} polls; last: ${lastSeen}`);
    if (ipamReadyAt === undefined || podsAt === undefined) ctx.failures.push(`convergence ${n} hosts: never saw every IPAM ready and every pod addressed in ${polls} polls; last: ${lastSeen}`);

    ctx.progress(`bench: convergence ${n} hosts: ping matrix (every pair the neighbour table allows)`);
    const m = await sb.pingMatrix({});
    const ok = m.sameHost.ok + m.crossHost.ok;
    if (ok < m.pinged) ctx.failures.push(`convergence ${n} hosts: ${m.pinged - ok} of ${m.pinged} pings failed${m.noBufferSpace ? ` (${m.noBufferSpace} with ENOBUFS)` : ''}`);
    if (m.duplicates.length) ctx.failures.push(`convergence ${n} hosts: addresses held twice: ${m.duplicates.map((d) => `${d.address}=${d.pods.join('+')}`).join('; ')}`);
    ctx.progress(`bench: convergence ${n} hosts: ${SETTLE_S} s to settle, then ${WINDOW_S} s of idle routers measured`);
    await sleep(SETTLE_S * 1000, ctx.signal);
    const idle = await idleFootprint(sb.hosts.map((h) => h.pid!), WINDOW_S * 1000, ctx.signal);
    const gossip = await gossipSent(sb);
    const loadEnd = loadNow();
    const d0 = Date.now();
    const d = await sb.down();
    const downMs = Date.now() - d0;
    if (d.failed.length) ctx.failures.push(`convergence ${n} hosts: namespaces not removed: ${d.failed.map((f) => `${f.netns}: ${f.error}`).join('; ')}`);
    if (d.others.length) ctx.notes.push(`convergence ${n} hosts: processes left in removed namespaces: ${d.others.map((o) => `${o.pid} ${o.cmd}`).join('; ')}`);
    return {
      hosts: n,
      prefix,
      meshS: secs(meshAt),
      ipamReadyS: secs(ipamReadyAt),
      podsS: secs(podsAt),
      ipamS: ipamReadyAt === undefined || podsAt === undefined ? NaN : Math.max(ipamReadyAt, podsAt) / 1000,
      totalS: totalMs / 1000,
      meshAfterRoutersS: meshAt === undefined ? NaN : (meshAt - routersStarted) / 1000,
      downS: downMs / 1000,
      ping: { ok, pinged: m.pinged, totalPairs: m.totalPairs, crossHost: m.crossHost, sameHost: m.sameHost, duplicates: m.duplicates.length, noBufferSpace: m.noBufferSpace, s: m.ms / 1000 },
      phases: up.phases,
      cpuAtMeshS,
      procsAtMesh,
      gossip,
      idle,
      neigh: up.neigh,
      lastSeen,
      polls,
      loadStart,
      loadEnd,
    };
  } finally {
    // idempotent: a second down after the one above finds nothing
    await sb.down().catch((e: Error) => ctx.failures.push(`convergence ${n} hosts: sandbox down: ${e.message}`));
  }
}

/** Each command's mean count over the routers, largest first ("ip 12.5, nsenter 3"). */
function byCommand(per: Record<string, number>[]): string {
  const sum = new Map<string, number>();
  for (const p of per) for (const [c, n] of Object.entries(p)) sum.set(c, (sum.get(c) ?? 0) + n);
  const out = [...sum].sort((x, y) => y[1] - x[1]).map(([c, n]) => `${c} ${round(n / Math.max(1, per.length))}`);
  return out.length ? out.join(', ') : 'none reported';
}

/** `npm run bench` part 3: time to a full mesh, to ready IPAM, and to a finished set-up, N hosts vs M. */
export async function convergeBench(ctx: BenchContext): Promise<Row[]> {
  const counts = hostsEnv();
  const runs: Run[] = [];
  for (const n of counts) {
    try {
      runs.push(await oneRun(ctx, n));
    } catch (e) {
      if (ctx.signal.aborted) throw e;
      ctx.failures.push(`convergence ${n} hosts: ${(e as Error).message}`);
    }
  }
  const a = runs.find((r) => r.hosts === counts[0]);
  const b = counts.length > 1 ? runs.find((r) => r.hosts === counts[1]) : undefined;
  const rows: Row[] = [];
  const one = (r: Run | undefined, f: (r: Run) => number) => (r ? [f(r)] : []);
  const up = (k: number) => `Sandbox.up({hosts: ${k}, pods: 1, deadlineMs: ${DEADLINE_MS}, matrix: false})`;
  const cmd = `${up(counts[0]!)}${b ? `  vs  ${up(b.hosts)}` : ''}; GET /v1/summary of every router every ${POLL_MS} ms`;
  const vsTag = b ? `${counts[0]} hosts vs ${b.hosts}` : `${counts[0]} hosts`;
  const timeRow = (what: string, f: (r: Run) => number, c = cmd) => rows.push(row(`${what} (s), ${vsTag}`, 's', one(a, f), one(b, f), (xs) => xs[0] ?? NaN, c));
  timeRow('full mesh: every router N peers, N−1 established', (r) => r.meshS);
  timeRow('full mesh, counted from the last router start', (r) => r.meshAfterRoutersS);
  timeRow('every IPAM "ready" and every pod addressed', (r) => r.ipamS);
  timeRow('total set-up (Sandbox.up returns)', (r) => r.totalS);
  timeRow('tear-down (Sandbox.down)', (r) => r.downS, `${a ? `Sandbox.down() of ${a.hosts} hosts` : ''}${b ? `  vs  of ${b.hosts}` : ''}`);
  const perRouter = (r: Run) => r.cpuAtMeshS / r.hosts;
  timeRow('CPU of all routers until the full mesh', (r) => r.cpuAtMeshS, `${cmd}; utime+stime of every router from /proc at the first full-mesh poll`);
  timeRow('CPU per router until the full mesh', perRouter, `the same, divided by the hosts`);
  const procs = (r: Run) => median(r.procsAtMesh.map((p) => Object.values(p).reduce((x, y) => x + y, 0)));
  rows.push(row(`processes started per router until the full mesh, median, ${vsTag}`, 'n', one(a, procs), one(b, procs), (xs) => xs[0] ?? NaN, `${cmd}; router.processesStarted of each router's report at the first full-mesh poll`));
  const med = (f: (g: Gossip) => number) => (r: Run) => median(r.gossip.map(f).filter(Number.isFinite));
  rows.push(row(`gossip sent per router, median (bytes), ${vsTag}`, 'bytes', one(a, med((g) => g.bytesOut)), one(b, med((g) => g.bytesOut)), (xs) => xs[0] ?? NaN, 'sum of weft_gossip_bytes_total{direction="out"} of each router\'s /metrics after the idle window'));
  rows.push(row(`mesh messages sent per router, median, ${vsTag}`, 'bytes', one(a, med((g) => g.messagesOut)), one(b, med((g) => g.messagesOut)), (xs) => xs[0] ?? NaN, 'sum of weft_gossip_messages_total{direction="out"} (every kind, heartbeats too)'));
  const idleCmd = `after the ping matrix and ${SETTLE_S} s: VmRSS from /proc/PID/status; (utime+stime) over ${WINDOW_S} s from /proc/PID/stat`;
  rows.push(row(`router RSS idle, median (MiB), ${vsTag} [goal <= 80]`, 'MiB', one(a, (r) => median(r.idle.rssMiB)), one(b, (r) => median(r.idle.rssMiB)), (xs) => xs[0] ?? NaN, idleCmd));
  rows.push(row(`router RSS idle, max (MiB), ${vsTag}`, 'MiB', one(a, (r) => Math.max(...r.idle.rssMiB)), one(b, (r) => Math.max(...r.idle.rssMiB)), (xs) => xs[0] ?? NaN, idleCmd));
  rows.push(row(`router anonymous memory idle, median (MiB), ${vsTag}`, 'MiB', one(a, (r) => median(r.idle.anonMiB)), one(b, (r) => median(r.idle.anonMiB)), (xs) => xs[0] ?? NaN, `${idleCmd}; Anonymous from /proc/PID/smaps_rollup (RSS less the executable's file pages, shared by all routers)`));
  rows.push(row(`router CPU idle, median (% of a core), ${vsTag} [goal <= 1]`, '%', one(a, (r) => median(r.idle.cpuPercent)), one(b, (r) => median(r.idle.cpuPercent)), (xs) => xs[0] ?? NaN, idleCmd));
  rows.push(row(`router CPU idle, max (% of a core), ${vsTag}`, '%', one(a, (r) => Math.max(...r.idle.cpuPercent)), one(b, (r) => Math.max(...r.idle.cpuPercent)), (xs) => xs[0] ?? NaN, idleCmd));
  for (const r of runs) {
    rows.push(row(`ping matrix, ${r.hosts} hosts: pairs ok vs pairs pinged`, 'pairs', [r.ping.ok], [r.ping.pinged], (xs) => xs[0] ?? NaN, `sb.pingMatrix() (${r.ping.totalPairs} ordered pairs in all)`));
  }
  ctx.notes.unshift(
    `Times are seconds from the call of Sandbox.up to the first summary poll that saw the state (polls every ${POLL_MS} ms, so up to ~${POLL_MS} ms plus one poll late); ` +
      `"reference" is the ${b?.hosts ?? '-'}-host sandbox, ratio = ${counts[0]} hosts / ${b?.hosts ?? '-'}. Routers start one after another (each host after host 1 gets --peers 172.30.0.11); ` +
      `Sandbox.up attaches the pods only after its own mesh wait, so the IPAM row includes the mesh.`,
  );
  for (const r of runs) {
    ctx.notes.push(
      `${r.hosts} hosts (${r.prefix}): ${r.loadStart}; after the matrix ${r.loadEnd.join(' ')}. Phases of up: ${r.phases.map((p) => `${p.name} ${(p.ms / 1000).toFixed(1)} s`).join(', ')}. ` +
        `Processes started per router until the full mesh, by command (mean): ${byCommand(r.procsAtMesh)}. ` +
        `IPAM ready on every router at ${r.ipamReadyS.toFixed(1)} s, every pod addressed at ${r.podsS.toFixed(1)} s; ${r.polls} polls. ` +
        `Ping matrix: cross-host ${r.ping.crossHost.ok}/${r.ping.crossHost.total}, same-host ${r.ping.sameHost.ok}/${r.ping.sameHost.total}, ${r.ping.s.toFixed(1)} s` +
        (r.ping.noBufferSpace ? ` (${r.ping.noBufferSpace} refused with ENOBUFS)` : '') +
        `. Neighbour table limits set by the sandbox: ${r.neigh ? `gc_thresh2 ${r.neigh.before.thresh2} -> ${r.neigh.after.thresh2}, gc_thresh3 ${r.neigh.before.thresh3} -> ${r.neigh.after.thresh3}` : 'unchanged'}.`,
    );
  }
  ctx.json.runs = runs.map((r) => ({
    ...r,
    meshS: round(r.meshS),
    ipamReadyS: round(r.ipamReadyS),
    podsS: round(r.podsS),
    ipamS: round(r.ipamS),
    totalS: round(r.totalS),
    meshAfterRoutersS: round(r.meshAfterRoutersS),
    downS: round(r.downS),
  }));
  return rows;
}
