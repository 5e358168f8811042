/**
 * NetworkPolicy enforcement: what it costs pod traffic, and how fast a change takes effect.
 *
 * Both parts use the policy test bed (test/helpers/policy-lab.ts: host namespaces with a bridge,
 * pods on veths, two hosts joined by kernel VXLAN), with a PolicyEngine programming each host.
 * A synthetic cluster is known to the engines besides the two real pods: BENCH_POLICY_PODS pods
 * (default 1000) in 10 namespaces, a tenth of them local to each host, and BENCH_POLICY_COUNT
 * policies (default 200), every one selecting both real pods, with ingress and egress rules
 * over pod selectors, namespace selectors, named ports and ipBlocks.
 *
 *   throughput   client pod on host 1, server pod on host 2 (across the VXLAN); iperf3 TCP
 *                (Gbit/s) and UDP with 64-byte datagrams (packets/s, where per-packet cost
 *                shows), with the cluster's policies in force vs none at all vs only the one
 *                policy that lets iperf3 through; interleaved, BENCH_POLICY_REPS runs each
 *                (default 3) of BENCH_POLICY_SECONDS (default 5)
 *   enforcement  one host; the server is isolated; a policy allowing the client to UDP 7001 is
 *                added; from the `update` call to the first echo of a stream of new flows (a
 *                new socket every 5 ms). One warm-up round first. Reference: the same change with nothing else
 *                known (2 pods, 1 policy). BENCH_POLICY_REPS runs each.
 *   api          the same change end to end: a real router in Kubernetes mode (test/helpers/
 *                policy-kube.ts: the test API server, one host, pods attached by dist/weft-net),
 *                the NetworkPolicy created through the API server; from the POST to the first
 *                echo. The cluster's pods are Pod objects (a tenth on this host, their addresses
 *                allocated by the router as a CNI ADD would), its policies NetworkPolicy objects.
 *                Reference: the same router before the cluster is created (2 pods, 1 policy);
 *                not interleaved (creating and deleting 1,000 pods between runs would measure
 *                the churn): the reference runs first.
 *
 * BENCH_POLICY_PARTS picks among enforcement,throughput,api (default all three).
 * Nothing is asserted; namespaces are removed in `finally`.
 */
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { PolicyLab, type LabHost, type LabPod } from '../helpers/policy-lab';
import { KubePolicyBed } from '../helpers/policy-kube';
import { httpGet, type Netns } from '../helpers/netns';
import { RouterClient } from '../../src/common/client';
import { mapPool } from '../../src/sandbox/pool';
import type { AllocateResponse } from '../../src/common/api';
import type { PolicyInput } from '../../src/policy/model';
import { compile } from '../../src/policy/compile';
import { sleep } from '../../src/sandbox/pool';
import { type BenchContext, type Row, row, runInNetns, shown, waitQuiet } from './common';
import { median, round } from './stats';

function intEnv(name: string, dflt: number, min: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  if (!/^\d+$/.test(v) || Number(v) < min) throw new Error(`${name}="${v}": expected a whole number >= ${min}`);
  return Number(v);
}

const NSES = 10;
const CLIENT_IP = '10.77.0.2';
const SERVER_IP = '10.77.0.3';
const IPERF_PORT = 5201;
const ECHO_PORT = 7000;
const NEW_PORT = 7001;

const np = (name: string, spec: Record<string, unknown>) => ({ metadata: { namespace: 'ns0', name }, spec });

/** The policy that lets iperf3 and the echo through, both ways isolated around it. */
const benchAllow = np('bench-allow', {
  podSelector: { matchExpressions: [{ key: 'app', operator: 'In', values: ['client', 'server'] }] },
  policyTypes: ['Ingress', 'Egress'],
  ingress: [{ from: [{ podSelector: { matchLabels: { app: 'client' } } }], ports: [{ port: IPERF_PORT }, { protocol: 'UDP', port: IPERF_PORT }, { protocol: 'UDP', port: 'echo' }] }],
  egress: [{ to: [{ podSelector: { matchLabels: { app: 'server' } } }], ports: [{ port: IPERF_PORT }, { protocol: 'UDP', port: IPERF_PORT }, { protocol: 'UDP', port: ECHO_PORT }] }],
});

/** The change whose enforcement is timed. */
const newPolicy = np('bench-new', {
  podSelector: { matchExpressions: [{ key: 'app', operator: 'In', values: ['client', 'server'] }] },
  policyTypes: ['Ingress', 'Egress'],
  ingress: [{ from: [{ podSelector: { matchLabels: { app: 'client' } } }], ports: [{ protocol: 'UDP', port: NEW_PORT }] }],
  egress: [{ to: [{ podSelector: { matchLabels: { app: 'server' } } }], ports: [{ protocol: 'UDP', port: NEW_PORT }] }],
});

interface Synthetic {
  namespaces: string[];
  pods: { namespace: string; name: string; ip: string; labels: Record<string, string>; host?: number }[];
  policies: unknown[];
}

/** The synthetic cluster: deterministic, so every run measures the same thing. */
function synthetic(pods: number, policies: number): Synthetic {
  const out: Synthetic = { namespaces: Array.from({ length: NSES }, (_, i) => `ns${i}`), pods: [], policies: [] };
  for (let i = 0; i < pods; i++) {
    out.pods.push({
      namespace: `ns${i % NSES}`,
      name: `pod-${i}`,
      ip: `10.78.${i >> 8}.${i & 255}`,
      labels: { app: `app${i % 50}`, tier: i % 3 === 0 ? 'db' : 'web' },
      host: i % 10 < 2 ? i % 10 : undefined,
    });
  }
  for (let i = 0; i < policies; i++) {
    const j = (i * 7) % NSES;
    out.policies.push(
      np(`p${i}`, {
        podSelector: { matchExpressions: [{ key: 'app', operator: 'In', values: ['client', 'server', `app${(i % 5) * 10}`] }] },
        policyTypes: ['Ingress', 'Egress'],
        ingress: [
          { from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': `ns${j}` } }, podSelector: { matchLabels: { app: `app${(j + 10 * (i % 5)) % 50}` } } }], ports: [{ port: 8000 + (i % 50) }, { port: 'http' }] },
          { from: [{ ipBlock: { cidr: '10.78.0.0/16', except: [`10.78.${i % 4}.0/24`] } }], ports: [{ port: 9000, endPort: 9000 + (i % 10) }] },
        ],
        egress: [
          { to: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': `ns${j}` } }, podSelector: { matchLabels: { tier: 'db' } } }], ports: [{ port: 5432 }] },
          { to: [{ ipBlock: { cidr: '10.78.0.0/16', except: [`10.78.${(i + 1) % 4}.0/24`] } }], ports: [{ protocol: 'UDP', port: 53 }] },
        ],
      }),
    );
  }
  return out;
}

/** What host `h` of the lab is given: the lab's pods, the synthetic cluster when there is one, `policies`. */
function hostInput(lab: PolicyLab, h: LabHost, syn: Synthetic | undefined, policies: unknown[]): PolicyInput {
  const input = lab.input(h, policies);
  if (!syn) return input;
  const pods = syn.pods.map((p) => ({ namespace: p.namespace, name: p.name, labels: p.labels, ips: [p.ip], hostNetwork: false, phase: 'Running', ports: [{ name: 'http', port: 8080, protocol: 'TCP' as const }] }));
  const namespaces = syn.namespaces.filter((n) => !input.namespaces.some((x) => x.name === n)).map((n) => ({ name: n, labels: { 'kubernetes.io/metadata.name': n } }));
  const local = syn.pods.filter((p) => p.host === h.index).map((p) => ({ ip: p.ip, namespace: p.namespace, name: p.name }));
  return { ...input, pods: [...input.pods, ...pods], namespaces: [...input.namespaces, ...namespaces], local: [...input.local, ...local] };
}

/** Every host's engine enforces that state. */
async function applyState(lab: PolicyLab, syn: Synthetic | undefined, policies: unknown[]): Promise<void> {
  await Promise.all(lab.hosts.map((h) => h.engine.update(hostInput(lab, h, syn, policies))));
}

function addRealPods(lab: PolicyLab, clientHost: number, serverHost: number): { client: LabPod; server: LabPod } {
  for (const ns of ['ns0']) lab.namespaceLabels.set(ns, {});
  const client = lab.addPod(clientHost, 'ns0', 'client', CLIENT_IP, { app: 'client' });
  const server = lab.addPod(serverHost, 'ns0', 'server', SERVER_IP, { app: 'server' }, [
    { name: 'iperf', containerPort: IPERF_PORT },
    { name: 'echo', containerPort: ECHO_PORT, protocol: 'UDP' },
  ]);
  return { client, server };
}

interface Iperf {
  value?: number;
  error?: string;
  cmd: string;
}

async function iperf(client: LabPod, server: LabPod, args: string[], seconds: number, pick: (j: any) => number | undefined, signal: AbortSignal): Promise<Iperf> {
  const cargs = ['-c', server.ip, '-t', String(seconds), '-J', ...args];
  const cmd = shown(client.ns.name, 'iperf3', cargs);
  const srv = spawn('nsenter', [`--net=${server.ns.path}`, '--', 'iperf3', '-s', '-1', '-p', String(IPERF_PORT)], { stdio: 'ignore' });
  try {
    for (let k = 0; ; k++) {
      const ss = await runInNetns(server.ns.name, 'ss', ['-Hltn', `sport = :${IPERF_PORT}`], 5000);
      if (ss.stdout.trim()) break;
      if (k >= 100) return { cmd, error: 'iperf3 server not listening after 5 s' };
      await sleep(50, signal);
    }
    const r = await runInNetns(client.ns.name, 'iperf3', cargs, (seconds + 30) * 1000);
    try {
      const j = JSON.parse(r.stdout);
      if (j.error) return { cmd, error: `iperf3: ${j.error}` };
      const v = pick(j);
      return v === undefined ? { cmd, error: 'no figure in iperf3 JSON' } : { cmd, value: v };
    } catch {
      return { cmd, error: `iperf3 exit ${r.code}: ${(r.stderr || r.stdout).slice(0, 300)}` };
    }
  } finally {
    if (srv.exitCode === null) srv.kill('SIGKILL');
  }
}

async function throughput(ctx: BenchContext, syn: Synthetic, reps: number, seconds: number): Promise<Row[]> {
  const lab = await PolicyLab.create(2, { blockedPollMs: 0 });
  try {
    const { client, server } = addRealPods(lab, 0, 1);
    const states = {
      none: () => applyState(lab, undefined, []),
      one: () => applyState(lab, undefined, [benchAllow]),
      many: () => applyState(lab, syn, [benchAllow, ...syn.policies]),
    };
    await states.many();
    const st = await lab.hosts[0]!.engine.status();
    ctx.notes.push(
      `throughput: with the cluster's policies, host 1 holds ${Object.entries(st.sets).map(([k, v]) => `${k} ${v}`).join(', ')} elements; ${st.rules} rules whatever the policies.`,
    );
    ctx.notes.push(await waitQuiet(ctx, 'policy throughput'));
    const tcp: Record<string, number[]> = { none: [], one: [], many: [] };
    const udp: Record<string, number[]> = { none: [], one: [], many: [] };
    const cmds: Record<string, string> = {};
    const order = ['none', 'many', 'one'] as const;
    for (let i = 0; i < reps; i++) {
      for (const k of [...order.slice(i % 3), ...order.slice(0, i % 3)]) {
        ctx.signal.throwIfAborted();
        await states[k]();
        const t = await iperf(client, server, [], seconds, (j) => j.end?.sum_received?.bits_per_second / 1e9, ctx.signal);
        const u = await iperf(client, server, ['-u', '-b', '0', '-l', '64'], seconds, (j) => (j.end?.sum?.packets ?? NaN) * (1 - (j.end?.sum?.lost_percent ?? 0) / 100) / seconds, ctx.signal);
        for (const [r, into, what] of [[t, tcp, 'tcp'], [u, udp, 'udp']] as const) {
          cmds[what] = r.cmd;
          if (r.value !== undefined && Number.isFinite(r.value)) into[k]!.push(r.value);
          else ctx.failures.push(`policy throughput ${what} ${k} #${i}: ${r.error}`);
        }
        ctx.progress(`bench: policy throughput #${i} ${k.padEnd(4)} TCP ${t.value?.toFixed(2) ?? t.error} Gbit/s, UDP 64 B ${u.value !== undefined ? Math.round(u.value) : u.error} packets/s received`);
      }
    }
    ctx.json.throughput = { tcpGbps: tcp, udpPps: udp, commands: cmds };
    const label = `${syn.policies.length} policies selecting both pods, ${syn.pods.length} pods known`;
    return [
      row(`TCP pod→pod across hosts (Gbit/s), ${label} vs no policy`, 'Gbit/s', tcp.many!, tcp.none!, median, cmds.tcp!),
      row(`UDP 64-byte datagrams received per second, ${label} vs no policy`, 'packets/s', udp.many!, udp.none!, median, cmds.udp!),
      row(`TCP pod→pod (Gbit/s), ${label} vs 1 policy`, 'Gbit/s', tcp.many!, tcp.one!, median, cmds.tcp!),
      row(`UDP 64-byte datagrams per second, ${label} vs 1 policy`, 'packets/s', udp.many!, udp.one!, median, cmds.udp!),
    ];
  } finally {
    await lab.destroy();
  }
}

/**
 * A stream of new flows (a new socket every 5 ms: finer would take the CPU the engine needs on
 * this 2-core machine) to host:port; resolves with the epoch ms of the first echo.
 */
function firstEcho(from: { ns: Netns }, host: string, port: number, limitMs: number, run: number) {
  // source ports of this run's own: a flow an earlier run left in the flow set must not answer early
  const base = 10_000 + (run % 18) * 3000;
  const script = `
    const dgram = require('dgram'); const { performance } = require('perf_hooks');
    const now = () => performance.timeOrigin + performance.now(); let n = 0;
    const one = () => { const s = dgram.createSocket('udp4'); const t = setTimeout(() => s.close(), 500);
      s.on('message', () => { process.stdout.write('echo ' + now() + '\\n'); process.exit(0); });
      s.on('error', () => undefined);
      s.bind(${base} + (n++ % 3000), () => s.send('x', ${port}, '${host}')); };
    setInterval(one, 5); process.stdout.write('started\\n'); setTimeout(() => process.exit(1), ${limitMs});`;
  const child = spawn('nsenter', [`--net=${from.ns.path}`, '--', 'node', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  let onStart: () => void;
  const started = new Promise<void>((r) => (onStart = r));
  const echo = new Promise<number | undefined>((resolve) => {
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('started')) onStart();
      const m = /echo ([\d.]+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.on('close', () => resolve(undefined));
  });
  return { started, echo };
}

async function enforcement(ctx: BenchContext, syn: Synthetic, reps: number): Promise<Row[]> {
  const lab = await PolicyLab.create(1, { blockedPollMs: 0 });
  try {
    const { client, server } = addRealPods(lab, 0, 0);
    await lab.serve(server, [{ protocol: 'udp', port: NEW_PORT }]);
    const samples: Record<'big' | 'small', number[]> = { big: [], small: [] };
    const commit: Record<'big' | 'small', number[]> = { big: [], small: [] };
    const full: number[] = [];
    const compileMs: number[] = [];
    const engine = lab.hosts[0]!.engine;
    for (let i = -1; i < reps; i++) {
      for (const k of i % 2 ? (['small', 'big'] as const) : (['big', 'small'] as const)) {
        ctx.signal.throwIfAborted();
        const s = k === 'big' ? syn : undefined;
        const base = k === 'big' ? [benchAllow, ...syn.policies] : [benchAllow];
        const t0 = performance.now();
        await applyState(lab, s, base);
        if (k === 'big' && i >= 0) full.push(performance.now() - t0);
        // the change, timed: a stream of new flows is already knocking
        const probe = firstEcho(client, SERVER_IP, NEW_PORT, 15_000, 2 * (i + 1) + (k === 'big' ? 1 : 0));
        await probe.started;
        await sleep(50, ctx.signal);
        const start = performance.timeOrigin + performance.now();
        const applied = applyState(lab, s, [...base, newPolicy]);
        const at = await probe.echo;
        await applied;
        const last = (await engine.status()).lastApply;
        const warm = i < 0;
        if (at === undefined) ctx.failures.push(`policy enforcement ${k} #${i}: no echo within 15 s`);
        else if (!warm) samples[k].push(at - start);
        if (last && !warm) commit[k].push(last.seconds * 1000);
        ctx.progress(`bench: policy enforcement #${i} ${k.padEnd(5)} first echo after ${at === undefined ? 'never' : (at - start).toFixed(1)} ms (update→commit ${last ? (last.seconds * 1000).toFixed(1) : '?'} ms: compile ${last ? (last.compileSeconds * 1000).toFixed(1) : '?'} ms, nft ${last ? (last.writeSeconds * 1000).toFixed(1) : '?'} ms, ${last?.kind} of ${last?.changes} elements)`);
      }
    }
    // the compiler alone, on the big state
    for (let i = 0; i < reps; i++) {
      const input = hostInput(lab, lab.hosts[0]!, syn, [benchAllow, ...syn.policies, newPolicy]);
      const c0 = performance.now();
      const plan = compile(input);
      compileMs.push(performance.now() - c0);
      if (i === 0) ctx.notes.push(`enforcement: the big state is ${Object.values(plan.elements).reduce((a, e) => a + e.length, 0)} set elements for ${plan.pods.length} selected local pods.`);
    }
    ctx.json.enforcement = { firstEchoMs: samples, updateToCommitMs: commit, fullWriteMs: full.map((x) => round(x)), compileMs: compileMs.map((x) => round(x)) };
    ctx.notes.push(
      `enforcement: switching from the small state to the big one (a new World compiled, all its elements added in one transaction) took ${full.map((x) => x.toFixed(0)).join(', ')} ms; ` +
        `compiling it alone ${compileMs.map((x) => x.toFixed(1)).join(', ')} ms; goal for the change: under 1 s.`,
    );
    const cmd = `PolicyEngine.update(+1 policy) -> first echo of ${shown(client.ns.name, 'node', ['-e', '<new UDP socket every 5 ms to ' + SERVER_IP + ':' + NEW_PORT + '>'])}`;
    const label = `${syn.pods.length} pods and ${syn.policies.length} policies known vs 2 pods and 1 policy`;
    return [
      row(`time from update to enforcement (ms), ${label}`, 'ms', samples.big, samples.small, median, cmd),
      row(`time from update to the kernel's commit (ms), ${label}`, 'ms', commit.big, commit.small, median, 'PolicyEngine status().lastApply.seconds'),
    ];
  } finally {
    await lab.destroy();
  }
}

const obj = (kind: string, apiVersion: string, o: { metadata: Record<string, unknown>; [k: string]: unknown }) => ({ apiVersion, kind, ...o });

async function apiEnforcement(ctx: BenchContext, syn: Synthetic, reps: number): Promise<Row[]> {
  const bed = await KubePolicyBed.create(`wpb${Math.floor(Math.random() * 256).toString(16)}`, '172.31.16', 1);
  try {
    const router = new RouterClient({ socket: bed.routers[0]!.socket, timeoutMs: 30_000 });
    for (const ns of syn.namespaces) await bed.namespace(ns, {});
    const client = await bed.addPod(0, 'ns0', 'client', { app: 'client' }, []);
    const server = await bed.addPod(0, 'ns0', 'server', { app: 'server' }, [
      { name: 'iperf', containerPort: IPERF_PORT },
      { name: 'echo', containerPort: ECHO_PORT, protocol: 'UDP' },
    ]);
    await bed.serve(server, [{ protocol: 'udp', port: NEW_PORT }]);
    const samples: Record<'big' | 'small', number[]> = { big: [], small: [] };
    const commit: Record<'big' | 'small', number[]> = { big: [], small: [] };
    const seen: Record<'big' | 'small', number[]> = { big: [], small: [] };
    const metric = async () => {
      const body = httpGet(bed.hosts[0]!, 'http://127.0.0.1:6782/metrics').body;
      const v = (name: string) => Number(new RegExp(`^${name} ([\\d.e+-]+)$`, 'm').exec(body)?.[1] ?? NaN);
      return { sum: v('weft_policy_enforcement_seconds_sum'), count: v('weft_policy_enforcement_seconds_count') };
    };
    const newPath = '/apis/networking.k8s.io/v1/namespaces/ns0/networkpolicies/bench-new';
    const measure = async (k: 'big' | 'small', run: number, warm: boolean) => {
      ctx.signal.throwIfAborted();
      // the new policy gone again, and every change before it enforced
      await bed.remove(newPath).catch(() => undefined);
      await bed.settle();
      const m0 = await metric();
      const probe = firstEcho(client, server.ip, NEW_PORT, 15_000, run);
      await probe.started;
      await sleep(50, ctx.signal);
      const start = performance.timeOrigin + performance.now();
      await bed.put(obj('NetworkPolicy', 'networking.k8s.io/v1', newPolicy as { metadata: Record<string, unknown> }));
      const at = await probe.echo;
      await bed.settle();
      const st = (await bed.policyStatus(0)).engine?.lastApply;
      const m1 = await metric();
      if (at === undefined) ctx.failures.push(`policy api ${k} #${run}: no echo within 15 s`);
      else if (!warm) samples[k].push(at - start);
      if (st && !warm) commit[k].push(st.seconds * 1000);
      // what the router's own histogram saw for this change: its watch event to its enforcement
      const routerMs = m1.count > m0.count ? ((m1.sum - m0.sum) / (m1.count - m0.count)) * 1000 : NaN;
      if (!warm && Number.isFinite(routerMs)) seen[k].push(routerMs);
      ctx.progress(`bench: policy api #${run} ${k.padEnd(5)} first echo after ${at === undefined ? 'never' : (at - start).toFixed(1)} ms (router: watch event -> enforced ${routerMs.toFixed(1)} ms; engine update -> commit ${st ? (st.seconds * 1000).toFixed(1) : '?'} ms, ${st?.kind} of ${st?.changes} elements)`);
    };
    // reference first: the cluster is just the two pods and one policy (one warm-up round)
    await bed.apply([benchAllow]);
    for (let i = 0; i <= reps; i++) await measure('small', i, i === 0);
    // the cluster: its pods as Pod objects (a tenth on this host, addressed by the router), its policies
    const t0 = performance.now();
    const local = syn.pods.filter((p) => p.host === 0);
    const addr = new Map<string, string>();
    await mapPool(local, 8, async (p) => {
      const r = await router.post<AllocateResponse>('/v1/ipam/allocate', { network: 'bench', containerId: `syn-${p.name}`, ifname: 'eth0', bridge: 'weave', pod: { namespace: p.namespace, name: p.name } });
      addr.set(p.name, r.address.split('/')[0]!);
    });
    await mapPool(syn.pods, 8, async (p) => {
      const ip = addr.get(p.name) ?? p.ip;
      await bed.put(
        obj('Pod', 'v1', {
          metadata: { namespace: p.namespace, name: p.name, labels: p.labels },
          spec: { nodeName: addr.has(p.name) ? 'h1' : 'elsewhere', containers: [{ name: 'c', image: 'x', ports: [{ name: 'http', containerPort: 8080 }] }] },
          status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] },
        }),
      );
    });
    await mapPool(syn.policies as { metadata: Record<string, unknown> }[], 8, (p) => bed.put(obj('NetworkPolicy', 'networking.k8s.io/v1', p)));
    await bed.settle(120_000);
    const ps = await bed.policyStatus(0);
    ctx.notes.push(
      `api: the cluster (${syn.pods.length} Pod objects, ${local.length} of them on the router's host, ${syn.policies.length} NetworkPolicies) created through the API server and enforced in ${((performance.now() - t0) / 1000).toFixed(1)} s; ` +
        `the router then holds ${Object.values(ps.engine!.sets).reduce((a, b) => a + b, 0)} set elements for ${ps.engine!.pods.length} selected local pods.`,
    );
    for (let i = 0; i <= reps; i++) await measure('big', 9 + i, i === 0);
    ctx.json.api = { firstEchoMs: samples, updateToCommitMs: commit, watchToEnforcedMs: seen };
    const cmd = `POST /apis/networking.k8s.io/v1/namespaces/ns0/networkpolicies (test API server) -> first echo of ${shown(client.ns.name, 'node', ['-e', '<new UDP socket every 5 ms to ' + server.ip + ':' + NEW_PORT + '>'])}`;
    const label = `${syn.pods.length} pods and ${syn.policies.length} policies known vs 2 pods and 1 policy`;
    return [
      row(`time from a NetworkPolicy created through the API to enforcement by a real router (ms), ${label}`, 'ms', samples.big, samples.small, median, cmd),
      row(`the router's own view: watch event to enforced (ms), same`, 'ms', seen.big, seen.small, median, 'weft_policy_enforcement_seconds (sum/count delta per change)'),
      row(`the engine's part: update to the kernel's commit (ms), same`, 'ms', commit.big, commit.small, median, 'weft status policy: LastApply'),
    ];
  } finally {
    await bed.destroy();
  }
}

/** `BENCH_ONLY=policy npm run bench`. */
export async function policyBench(ctx: BenchContext): Promise<Row[]> {
  const reps = intEnv('BENCH_POLICY_REPS', 3, 1);
  const seconds = intEnv('BENCH_POLICY_SECONDS', 5, 1);
  const syn = synthetic(intEnv('BENCH_POLICY_PODS', 1000, 10), intEnv('BENCH_POLICY_COUNT', 200, 1));
  const parts = (process.env.BENCH_POLICY_PARTS || 'enforcement,throughput,api').split(',').map((x) => x.trim());
  const bad = parts.filter((p) => !['enforcement', 'throughput', 'api'].includes(p));
  if (bad.length) throw new Error(`BENCH_POLICY_PARTS="${process.env.BENCH_POLICY_PARTS}": expected a comma list of enforcement, throughput, api`);
  ctx.json.cluster = { pods: syn.pods.length, policies: syn.policies.length, reps, seconds, parts };
  const rows: Row[] = [];
  if (parts.includes('enforcement')) rows.push(...(await enforcement(ctx, syn, reps)));
  if (parts.includes('throughput')) rows.push(...(await throughput(ctx, syn, reps, seconds)));
  if (parts.includes('api')) rows.push(...(await apiEnforcement(ctx, syn, reps)));
  return rows;
}
