/**
 * `weft sandbox probe`: the reachability matrix of the sandbox's Kubernetes pods, from every pod
 * to every pod, one per protocol and port, through the matrix runner (src/policy/matrix-run.ts).
 * Each source pod runs one `weft probe-agent probe` (nsenter into its namespace) with all its
 * targets at once, so a whole matrix costs about one probe deadline.
 */
import { ConfigError } from '../common/errors';
import { formatTruth, type Truth } from '../policy/matrix';
import { probeMatrix, specName, type MatrixDeadlines, type MatrixPod, type MatrixSpec } from '../policy/matrix-run';
import { runCaptured } from '../sys/process';
import type { SandboxCore } from './base';
import { netnsPath, SandboxError } from './types';
import { byText } from '../common/order';

export interface ProbedPod extends MatrixPod {
  /** The sandbox pod's namespace, e.g. wsb-h1-p1. */
  netns: string;
  host: number;
}

export interface ProbeOutcome {
  pods: ProbedPod[];
  specs: MatrixSpec[];
  /** Per spec name ("tcp/80"). */
  matrices: Map<string, Truth>;
  ms: number;
}

/** Parses `tcp/80,udp/81` (also `tcp:80`). */
export function parsePorts(s: string): MatrixSpec[] {
  const out: MatrixSpec[] = [];
  for (const part of s.split(',').map((x) => x.trim()).filter(Boolean)) {
    const m = /^(tcp|udp)[/:](\d{1,5})$/i.exec(part);
    if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new ConfigError('--ports', `"${part}" is not tcp/PORT or udp/PORT`);
    out.push({ protocol: m[1]!.toLowerCase() as 'tcp' | 'udp', port: Number(m[2]) });
  }
  if (!out.length) throw new ConfigError('--ports', 'is empty');
  return out;
}

/** The sandbox's Kubernetes pods with an address, as probes see them. */
export function probedPods(sb: SandboxCore): ProbedPod[] {
  return sb.pods.filter((p) => p.k8s && p.address).map((p) => ({ key: `${p.k8s!.namespace}/${p.k8s!.name}`, ip: p.address!, netns: p.name, host: p.host }));
}

/** Every port some pod serves, TCP first, by number. */
export function servedSpecs(sb: SandboxCore): MatrixSpec[] {
  const all = new Set(sb.pods.flatMap((p) => p.k8s?.ports ?? []));
  return [...all]
    .map((s) => ({ protocol: s.split('/')[0] as 'tcp' | 'udp', port: Number(s.split('/')[1]) }))
    .sort((a, b) => byText(a.protocol, b.protocol) || a.port - b.port);
}

export async function probeSandbox(sb: SandboxCore, specs?: MatrixSpec[], deadlines?: MatrixDeadlines): Promise<ProbeOutcome> {
  const t0 = Date.now();
  const st = sb.record;
  if (!st) throw new SandboxError(`no sandbox with prefix ${sb.prefix}`);
  const pods = probedPods(sb).sort((a, b) => byText(a.key, b.key));
  if (pods.length === 0) throw new SandboxError('no Kubernetes pods in the sandbox to probe (create them with --manifests DIR or weft sandbox apply FILE)');
  const use = specs ?? servedSpecs(sb);
  if (use.length === 0) throw new SandboxError('no pod declares a port; give --ports');
  const matrices = await probeMatrix(
    async (from: ProbedPod, targets) => {
      const longest = Math.max(...targets.map((t) => t.timeoutMs));
      const r = await runCaptured('nsenter', [`--net=${netnsPath(from.netns)}`, '--', st.weft, 'probe-agent', 'probe'], { input: JSON.stringify(targets), timeoutMs: longest + 15_000 });
      if (r.exitCode !== 0) throw new SandboxError(`probes from ${from.key}: ${r.failure ?? `exit ${r.exitCode}`}: ${r.stderr.trim().split('\n').slice(-2).join(' | ')}`);
      return JSON.parse(r.stdout) as { connected: boolean; error?: string }[];
    },
    use,
    { from: pods, deadlines },
  );
  return { pods, specs: use, matrices, ms: Date.now() - t0 };
}

/** One table per spec, `.` reachable and `X` blocked, rows sources and columns destinations. */
export function formatProbe(r: ProbeOutcome): string {
  return r.specs.map((s) => formatTruth(r.matrices.get(specName(s))!, specName(s))).join('\n');
}

export function probeJson(r: ProbeOutcome): unknown {
  return {
    pods: r.pods.map((p) => ({ pod: p.key, ip: p.ip, host: p.host, netns: p.netns })),
    ms: r.ms,
    matrices: Object.fromEntries(
      r.specs.map((s) => {
        const t = r.matrices.get(specName(s))!;
        return [specName(s), Object.fromEntries(t.pods.map((f) => [f, Object.fromEntries(t.pods.map((to) => [to, t.get(f, to)]))]))];
      }),
    ),
  };
}
