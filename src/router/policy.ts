/**
 * The router's NetworkPolicy part, in Kubernetes mode only: the engine (src/policy/engine.ts)
 * fed by the source (src/policy/source.ts) from three watches through KubeMode's client, this
 * host's attachments (IPAM records) and the bridge's addresses. Offers what the rest of the
 * router shows: `GET /v1/policy` (`weft status policy`), drop counts as deltas for the
 * metrics, and readiness (a damaged table, an apply that keeps failing).
 */
import type { AllocationRecord } from '../common/api';
import type { Startable } from '../common/lifecycle';
import type { Logger } from '../common/log';
import { addressOf } from '../datapath/bridge-addrs';
import { GATEWAY_NETWORK } from '../ipam/allocator';
import type { KubeClient } from '../kube/client';
import { ResourceWatch } from '../kube/watch';
import { PolicyEngine, type PolicyEngineInit, type PolicyStatus } from '../policy/engine';
import type { LocalPod } from '../policy/model';
import { PolicySource, type PolicyResource, type PolicySourceInit, type PolicySourceStatus, type WatchedObjects } from '../policy/source';
import { Nft } from '../sys/nft';
import type { ApiServer } from './http';
import { byText } from '../common/order';

/** GET /v1/policy. Field names are stable: scripts read them. */
export interface PolicyReport {
  /** False outside Kubernetes mode: no policy is enforced, nor any table touched. */
  enabled: boolean;
  /** Why not, when not enabled. */
  reason?: string;
  /** The kernel side: table, policies and selected pods of the last apply, set sizes, drops, blocked connections. */
  engine?: PolicyStatus;
  /** The API side: lists arrived, objects, malformed ones left out, the newest change enforced. */
  source?: PolicySourceStatus;
}

export interface RouterPolicyComponents {
  /** KubeMode's client: the watches go through it. */
  client: KubeClient;
  /** IPAM records on this host, the bridge's own (network `_gateway`) among them. */
  attachments(): readonly AllocationRecord[];
  /** Addresses given to the bridge with `weft expose`. */
  exposed(): readonly string[];
  log: Logger;
  /** Seconds from a change seen on the API to its enforcement. */
  enforced?(seconds: number): void;
  /** nft in the router's namespace (default: a new one). */
  nft?: Nft;
}

export interface RouterPolicyInit extends Pick<PolicySourceInit, 'exempt'> {
  engine?: PolicyEngineInit;
}

/** Pods on this host as the engine wants them: pod attachments, address without prefix, identity from CNI_ARGS. */
export function localPods(records: readonly AllocationRecord[]): LocalPod[] {
  return records
    .filter((r) => r.network !== GATEWAY_NETWORK)
    .map((r) => ({ ip: addressOf(r.address), ...(r.pod?.namespace ? { namespace: r.pod.namespace } : {}), ...(r.pod?.name ? { name: r.pod.name } : {}) }))
    .sort((a, b) => byText(a.ip, b.ip));
}

/** This host's addresses on the pod network: the bridge's gateways and exposed addresses. */
export function nodeAddresses(records: readonly AllocationRecord[], exposed: readonly string[]): string[] {
  const gw = records.filter((r) => r.network === GATEWAY_NETWORK).map((r) => r.address);
  return [...new Set([...gw, ...exposed].map(addressOf))].sort();
}

export class RouterPolicy implements Startable {
  readonly engine: PolicyEngine;
  readonly source: PolicySource;
  private lastDrops: { ingress: number; egress: number } | undefined;

  constructor(c: RouterPolicyComponents, init: RouterPolicyInit = {}) {
    const log = c.log;
    this.engine = new PolicyEngine({ log, nft: c.nft ?? new Nft() }, init.engine);
    const watch = (resource: PolicyResource): WatchedObjects => new ResourceWatch({ client: c.client, log }, { resource });
    const watches = { pods: watch('pods'), namespaces: watch('namespaces'), networkpolicies: watch('networkpolicies') };
    this.source = new PolicySource(
      {
        watches,
        engine: this.engine,
        local: () => localPods(c.attachments()),
        nodeAddresses: () => nodeAddresses(c.attachments(), c.exposed()),
        log,
        enforced: c.enforced,
      },
      { exempt: init.exempt },
    );
  }

  /** The engine first (it keeps a previous run's table in force), then the watches. */
  async start(): Promise<void> {
    await this.engine.start();
    this.lastDrops = await this.engine.drops().catch(() => undefined);
    await this.source.start();
  }

  async stop(): Promise<void> {
    await this.source.stop();
    await this.engine.stop();
  }

  /** This host's attachments or addresses changed (a CNI ADD or DEL, a new gateway). */
  kick(): void {
    this.source.kick();
  }

  async status(): Promise<PolicyReport> {
    return { enabled: true, engine: await this.engine.status(), source: this.source.status() };
  }

  /** What is wrong with enforcement, for /readyz; empty when nothing is. */
  async readiness(): Promise<string[]> {
    const problem = await this.engine.verify();
    const err = this.engine.failing;
    return [problem && `NetworkPolicy table: ${problem}`, err && `NetworkPolicy not applied: ${err}`].filter((x): x is string => !!x);
  }

  /**
   * Drops since the last call (since the start, the first time). The kernel's counters outlive
   * the router, so they are counted from what they were when this process started; a counter
   * that went down (the table was removed) counts from zero.
   */
  async dropDeltas(): Promise<{ ingress: number; egress: number }> {
    const now = await this.engine.drops();
    const last = this.lastDrops ?? { ingress: 0, egress: 0 };
    this.lastDrops = now;
    const d = (k: 'ingress' | 'egress') => (now[k] >= last[k] ? now[k] - last[k] : now[k]);
    return { ingress: d('ingress'), egress: d('egress') };
  }
}

/** `GET /v1/policy`; outside Kubernetes mode it says why nothing is enforced. */
export function registerPolicyApi(api: ApiServer, policy: RouterPolicy | undefined): void {
  api.on('GET', '/v1/policy', async (): Promise<PolicyReport> =>
    policy ? policy.status() : { enabled: false, reason: 'NetworkPolicy is enforced in Kubernetes mode only (--kubeconfig, or running in a pod)' },
  );
}
