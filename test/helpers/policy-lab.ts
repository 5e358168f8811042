/**
 * A NetworkPolicy test bed in network namespaces: one or two "hosts", each a namespace with a
 * bridge (as weft's `weave`) holding a gateway address, pods as namespaces on veths into it,
 * and, with two hosts, a kernel VXLAN device on each bridge over an underlay veth pair, so pods
 * on both hosts share one /24. A PolicyEngine programs each host's namespace. Pods serve TCP and
 * UDP (dist/weft probe-agent) and SCTP (sctp-probe.py over raw sockets); probes run in parallel
 * from every pod. Everything goes with `destroy()`.
 */
import { needs } from './needs';
import { Netns, WEFT, sh, uid } from './netns';
import { ProbeAgents, type ProbeResult } from './probe-agents';
import { Nft } from '../../src/sys/nft';
import { PolicyEngine, type PolicyEngineInit } from '../../src/policy/engine';
import { parseNamespace, parseNetworkPolicy, parsePod, type PolicyInput } from '../../src/policy/model';
import type { Truth, PodKey } from '../../src/policy/matrix';
import { probeMatrix, specName, type MatrixProtocol, type MatrixSpec, type MatrixTarget } from '../../src/policy/matrix-run';
import { FAMILY, TABLE } from '../../src/policy/ruleset';

export { SCTP_PROBE } from './probe-agents';
export { specName };
export const SUBNET = '10.77.0';

import { memoryLogger } from './record-log';
export { memoryLogger };

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

export type ProbeProto = MatrixProtocol;
export type PortSpec = MatrixSpec;

/** The policy lab's needs (under CI a missing one fails, naming it; see needs.ts). */
export function labSkip(): string | undefined {
  return needs({ root: true, built: true, tools: ['ip', 'nsenter', 'nft', 'python3'] });
}

export class PolicyLab {
  readonly hosts: LabHost[] = [];
  readonly pods: LabPod[] = [];
  readonly namespaceLabels = new Map<string, Record<string, string>>();
  /** The servers in each namespace, which also probe from there. */
  private readonly agents = new ProbeAgents();
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
  serve(pod: LabPod | Netns, specs: readonly PortSpec[]): Promise<void> {
    return this.agents.serve(pod instanceof Netns ? pod : pod.ns, specs);
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
  matrix(specs: readonly PortSpec[], expected?: ReadonlyMap<string, Truth>, from: LabPod[] = this.pods, to: LabPod[] = this.pods): Promise<Map<string, Truth>> {
    return probeMatrix((src, targets) => this.probe(src.ns, targets), specs, { from, to, expected });
  }

  /** Raw probes from a namespace; results in the order of `targets`. */
  probe(ns: Netns, targets: readonly MatrixTarget[]): Promise<ProbeResult[]> {
    return this.agents.probe(ns, targets);
  }

  async destroy(): Promise<void> {
    for (const h of this.hosts) await h.engine.stop().catch(() => undefined);
    this.agents.destroy();
    for (const p of this.pods) p.ns.destroy();
    for (const h of this.hosts) h.ns.destroy();
  }
}
