/**
 * A NetworkPolicy test bed in network namespaces: one or two "hosts", each a namespace with a
 * bridge (as weft's `weave`) holding a gateway address, pods as namespaces on veths into it,
 * and, with two hosts, a kernel VXLAN device on each bridge over an underlay veth pair, so pods
 * on both hosts share one /24. A PolicyEngine programs each host's namespace. Pods serve TCP and
 * UDP (dist/weft probe-agent) and SCTP (sctp-probe.py over raw sockets); probes run in parallel
 * from every pod. Everything goes with `destroy()`.
 */
import { needs } from './needs';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { Netns, ROOT, WEFT, sh, uid } from './netns';
import { Nft } from '../../src/sys/nft';
import { PolicyEngine, type PolicyEngineInit } from '../../src/policy/engine';
import { parseNamespace, parseNetworkPolicy, parsePod, type PolicyInput } from '../../src/policy/model';
import { Truth, type PodKey } from '../../src/policy/matrix';
import { FAMILY, TABLE } from '../../src/policy/ruleset';
import type { Level, Logger } from '../../src/common/log';

export const SCTP_PROBE = join(ROOT, 'test/helpers/sctp-probe.py');
export const SUBNET = '10.77.0';

/** A Logger that keeps its records, for assertions on what the engine logged. */
export function memoryLogger(lines: { level: Level; fields: Record<string, unknown>; msg: string }[] = []): Logger & { lines: typeof lines } {
  const make = (bindings: Record<string, unknown>): Logger & { lines: typeof lines } => {
    const emit = (level: Level) => (fields: Record<string, unknown> | string, msg?: string) => {
      if (typeof fields === 'string') lines.push({ level, fields: bindings, msg: fields });
      else lines.push({ level, fields: { ...bindings, ...fields }, msg: msg ?? '' });
    };
    return {
      level: 'trace',
      trace: emit('trace'),
      debug: emit('debug'),
      info: emit('info'),
      warn: emit('warn'),
      error: emit('error'),
      child: (b) => make({ ...bindings, ...b }),
      flush: () => undefined,
      lines,
    };
  };
  return make({});
}

export interface LabHost {
  index: number;
  ns: Netns;
  gateway: string;
  nft: Nft;
  engine: PolicyEngine;
  log: ReturnType<typeof memoryLogger>;
}

export interface LabPod {
  key: PodKey;
  namespace: string;
  name: string;
  ip: string;
  ns: Netns;
  host: LabHost;
  labels: Record<string, string>;
  /** Container ports as the Pod object declares them. */
  ports: { name?: string; containerPort: number; protocol?: string }[];
}

export type ProbeProto = 'tcp' | 'udp' | 'sctp';
export interface PortSpec {
  protocol: ProbeProto;
  port: number;
}
export const specName = (s: PortSpec) => `${s.protocol}/${s.port}`;

/** The policy lab's needs (under CI a missing one fails, naming it; see needs.ts). */
export function labSkip(): string | undefined {
  return needs({ root: true, built: true, tools: ['ip', 'nsenter', 'nft', 'python3'] });
}


export class PolicyLab {
  readonly hosts: LabHost[] = [];
  readonly pods: LabPod[] = [];
  readonly namespaceLabels = new Map<string, Record<string, string>>();
  private readonly servers: ChildProcess[] = [];
  /** The TCP/UDP agent serving in each namespace, which also probes from there. */
  private readonly agents = new Map<string, Agent>();
  private readonly prefix = `wpol${uid()}`;
  private vethSeq = 0;

  /** Hosts with their bridges (and the VXLAN between them when there are two). */
  static async create(hosts: 1 | 2, engineInit: PolicyEngineInit = {}): Promise<PolicyLab> {
    const lab = new PolicyLab();
    try {
      for (let i = 0; i < hosts; i++) {
        const ns = Netns.create(`${lab.prefix}-h${i + 1}`);
        const gateway = `${SUBNET}.${i === 0 ? 1 : 254}`;
        ns.run('ip', ['link', 'add', 'weave', 'type', 'bridge']);
        ns.run('ip', ['addr', 'add', `${gateway}/24`, 'dev', 'weave']);
        ns.run('ip', ['link', 'set', 'weave', 'up']);
        const nft = new Nft({ netns: ns.path });
        const log = memoryLogger();
        const engine = new PolicyEngine({ log, nft }, { blockedPollMs: 0, ...engineInit });
        lab.hosts.push({ index: i, ns, gateway, nft, engine, log });
      }
      if (hosts === 2) {
        const [a, b] = lab.hosts as [LabHost, LabHost];
        sh('ip', ['-n', a.ns.name, 'link', 'add', 'u0', 'type', 'veth', 'peer', 'name', 'u0', 'netns', b.ns.name]);
        for (const [h, me, other] of [
          [a, '172.31.255.1', '172.31.255.2'],
          [b, '172.31.255.2', '172.31.255.1'],
        ] as const) {
          h.ns.run('ip', ['addr', 'add', `${me}/30`, 'dev', 'u0']);
          h.ns.run('ip', ['link', 'set', 'u0', 'up']);
          h.ns.run('ip', ['link', 'add', 'vxlan-6784', 'type', 'vxlan', 'id', '4242', 'dstport', '6784', 'local', me, 'remote', other, 'dev', 'u0']);
          h.ns.run('ip', ['link', 'set', 'vxlan-6784', 'master', 'weave', 'up']);
        }
      }
      for (const h of lab.hosts) await h.engine.start();
    } catch (e) {
      await lab.destroy();
      throw e;
    }
    return lab;
  }

  addPod(host: number, namespace: string, name: string, ip: string, labels: Record<string, string> = {}, ports: LabPod['ports'] = []): LabPod {
    const h = this.hosts[host]!;
    const ns = Netns.create(`${this.prefix}-p`);
    const hv = `wpv${this.vethSeq++}`;
    sh('ip', ['-n', h.ns.name, 'link', 'add', hv, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns.name]);
    h.ns.run('ip', ['link', 'set', hv, 'master', 'weave', 'up']);
    ns.run('ip', ['addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    ns.run('ip', ['link', 'set', 'eth0', 'up']);
    ns.run('ip', ['route', 'add', 'default', 'via', h.gateway]);
    const pod: LabPod = { key: `${namespace}/${name}`, namespace, name, ip, ns, host: h, labels, ports };
    this.pods.push(pod);
    return pod;
  }

  pod(key: PodKey): LabPod {
    const p = this.pods.find((x) => x.key === key);
    if (!p) throw new Error(`no pod ${key}`);
    return p;
  }

  /** Starts servers in `pod` for every spec; resolves when all listen. */
  async serve(pod: LabPod | Netns, specs: readonly PortSpec[]): Promise<void> {
    const ns = pod instanceof Netns ? pod : pod.ns;
    const tcpUdp = specs.filter((s) => s.protocol !== 'sctp').map((s) => `${s.protocol}:${s.port}`);
    const sctp = specs.filter((s) => s.protocol === 'sctp').map((s) => String(s.port));
    const starts: Promise<void>[] = [];
    if (tcpUdp.length) {
      if (this.agents.has(ns.path)) throw new Error(`${ns.name} has its agent already`);
      const agent = new Agent(ns, tcpUdp);
      this.agents.set(ns.path, agent);
      this.servers.push(agent.child);
      starts.push(agent.ready);
    }
    if (sctp.length) starts.push(this.startServer(ns, ['python3', SCTP_PROBE, 'serve', ...sctp]));
    await Promise.all(starts);
  }

  private startServer(ns: Netns, argv: string[]): Promise<void> {
    const child = spawn('nsenter', [`--net=${ns.path}`, '--', ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.servers.push(child);
    return new Promise((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`${argv.join(' ')} in ${ns.name}: not ready within 30 s: ${out}`)), 30_000);
      child.stdout!.on('data', (d) => {
        out += d;
        if (out.includes('ready')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.stderr!.on('data', (d) => (out += d));
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`${argv.join(' ')} in ${ns.name} exited ${code}: ${out}`));
      });
    });
  }

  /** The engine input for `host`: every pod and namespace, these policies, the host's pods as local. */
  input(host: LabHost, policies: readonly unknown[]): PolicyInput {
    const nsNames = [...new Set([...this.pods.map((p) => p.namespace), ...this.namespaceLabels.keys()])];
    return {
      namespaces: nsNames.map((n) => parseNamespace({ metadata: { name: n, labels: this.namespaceLabels.get(n) ?? {} } })),
      pods: this.pods.map((p) =>
        parsePod({
          metadata: { namespace: p.namespace, name: p.name, labels: p.labels },
          spec: { nodeName: `host${p.host.index + 1}`, containers: [{ name: 'c', ports: p.ports }] },
          status: { phase: 'Running', podIP: p.ip, podIPs: [{ ip: p.ip }] },
        }),
      ),
      policies: policies.map(parseNetworkPolicy),
      local: this.pods.filter((p) => p.host === host).map((p) => ({ ip: p.ip, namespace: p.namespace, name: p.name })),
      nodeAddresses: [host.gateway],
    };
  }

  /**
   * Empties every host's flow sets. A probe whose random source port matches a flow an earlier
   * case allowed is a reply to it as far as the kernel knows (as it would be with conntrack);
   * each matrix starts without such history.
   */
  forgetFlows(): void {
    for (const h of this.hosts) for (const set of ['flows', 'flows_np']) h.ns.run('nft', ['flush', 'set', FAMILY, TABLE, set]);
  }

  /** Every host's engine enforces `policies` (raw NetworkPolicy objects). */
  async apply(policies: readonly unknown[]): Promise<void> {
    await Promise.all(this.hosts.map((h) => h.engine.update(this.input(h, policies))));
  }

  /**
   * Probes from each pod in `from` to each pod in `to` on every spec, all at once. A probe that
   * `expected` says is blocked gets a short deadline, one it says connects a long one.
   */
  async matrix(specs: readonly PortSpec[], expected?: ReadonlyMap<string, Truth>, from: LabPod[] = this.pods, to: LabPod[] = this.pods): Promise<Map<string, Truth>> {
    const keys = [...new Set([...from, ...to].map((p) => p.key))];
    const out = new Map(specs.map((s) => [specName(s), new Truth(keys, false)]));
    await Promise.all(
      from.map(async (src) => {
        const targets = to.flatMap((dst) =>
          specs.map((s) => {
            const exp = expected?.get(specName(s))?.get(src.key, dst.key);
            return { spec: s, dst, timeoutMs: exp === false ? 600 : exp === true ? 4000 : 1500 };
          }),
        );
        const results = await this.probe(src.ns, targets.map((t) => ({ protocol: t.spec.protocol, host: t.dst.ip, port: t.spec.port, timeoutMs: t.timeoutMs })));
        targets.forEach((t, i) => out.get(specName(t.spec))!.set(src.key, t.dst.key, results[i]!.connected));
      }),
    );
    return out;
  }

  /** Raw probes from a namespace; results in the order of `targets`. */
  async probe(ns: Netns, targets: { protocol: ProbeProto; host: string; port: number; timeoutMs: number }[]): Promise<{ connected: boolean; error?: string }[]> {
    const tcpUdp = targets.map((t, i) => ({ t, i })).filter((x) => x.t.protocol !== 'sctp');
    const sctp = targets.map((t, i) => ({ t, i })).filter((x) => x.t.protocol === 'sctp');
    const results: { connected: boolean; error?: string }[] = new Array(targets.length);
    const runs: Promise<void>[] = [];
    if (tcpUdp.length) {
      const agent = this.agents.get(ns.path);
      const asked = tcpUdp.map((x) => x.t);
      runs.push(
        (agent ? agent.probe(asked) : runJson(ns, [WEFT, 'probe-agent', 'probe'], asked)).then((r: { connected: boolean; error?: string }[]) => {
          r.forEach((x, k) => (results[tcpUdp[k]!.i] = x));
          const refused = r.find((x) => x.error === 'refused');
          if (refused) throw new Error(`probe from ${ns.name}: ${JSON.stringify(refused)}: nothing listens there (test set-up)`);
        }),
      );
    }
    if (sctp.length) {
      runs.push(runJson(ns, ['python3', SCTP_PROBE, 'probe'], sctp.map((x) => x.t)).then((r: { connected: boolean }[]) => r.forEach((x, k) => (results[sctp[k]!.i] = x))));
    }
    await Promise.all(runs);
    return results;
  }

  async destroy(): Promise<void> {
    for (const h of this.hosts) await h.engine.stop().catch(() => undefined);
    for (const s of this.servers) if (s.exitCode === null && s.signalCode === null) s.kill('SIGKILL');
    for (const p of this.pods) p.ns.destroy();
    for (const h of this.hosts) h.ns.destroy();
  }
}

/** `weft probe-agent agent` in a namespace: serves there, and probes from there on request. */
class Agent {
  readonly child: ChildProcess;
  readonly ready: Promise<void>;
  private seq = 0;
  private readonly waiting = new Map<number, (r: any[]) => void>();

  constructor(
    readonly ns: Netns,
    specs: string[],
  ) {
    this.child = spawn('nsenter', [`--net=${ns.path}`, '--', WEFT, 'probe-agent', 'agent', ...specs], { stdio: ['pipe', 'pipe', 'pipe'] });
    let log = '';
    this.child.stderr!.on('data', (d) => (log += d));
    this.ready = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`probe agent in ${ns.name}: not ready within 30 s: ${log}`)), 30_000);
      createInterface({ input: this.child.stdout! }).on('line', (line) => {
        if (line === 'ready') {
          clearTimeout(timer);
          return resolve();
        }
        const m = JSON.parse(line) as { id: number; results: any[] };
        this.waiting.get(m.id)?.(m.results);
        this.waiting.delete(m.id);
      });
      this.child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`probe agent in ${ns.name} exited ${code}: ${log}`));
        for (const w of this.waiting.values()) w([]);
      });
    });
    this.ready.catch(() => undefined);
  }

  probe(targets: unknown[]): Promise<any[]> {
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`probe agent in ${this.ns.name}: no answer within 30 s`)), 30_000);
      this.waiting.set(id, (r) => {
        clearTimeout(timer);
        if (r.length !== targets.length) reject(new Error(`probe agent in ${this.ns.name} ended`));
        else resolve(r);
      });
      this.child.stdin!.write(JSON.stringify({ id, targets }) + '\n');
    });
  }
}

/** Runs a command in `ns` with `input` as JSON on stdin and parses its stdout as JSON. */
function runJson(ns: Netns, argv: string[], input: unknown, timeoutMs = 30_000): Promise<any> {
  return new Promise((resolve, reject) => {
    const child = spawn('nsenter', [`--net=${ns.path}`, '--', ...argv], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`${argv.join(' ')} in ${ns.name}: exit ${code}: ${err || out}`));
      try {
        resolve(JSON.parse(out));
      } catch (e) {
        reject(new Error(`${argv.join(' ')} in ${ns.name}: not JSON: ${out} ${err}`));
      }
    });
    child.stdin.end(JSON.stringify(input));
  });
}
