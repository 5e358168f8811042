/**
 * Peers from the Kubernetes API: the other Nodes' addresses, watched, so hosts that join or
 * leave the cluster need no one to edit a peer list.
 */
import type { Startable } from '../common/lifecycle';
import type { Logger } from '../common/log';
import type { PeerSource, PeerTargets } from '../mesh/peer-source';
import type { ResourceWatchEvents } from './watch';
import type { KubeObject } from '../common/kube-object';

/** What the Kubernetes parts need of the shared Node watch (a `ResourceWatch` of 'nodes'). */
export interface NodeWatch {
  list(): readonly KubeObject[];
  get(name: string): KubeObject | undefined;
  readonly synced: boolean;
  readonly lastError?: string;
  waitSynced(timeoutMs: number): Promise<void>;
  on<E extends keyof ResourceWatchEvents<KubeObject>>(event: E, fn: (...a: ResourceWatchEvents<KubeObject>[E]) => void): unknown;
  off<E extends keyof ResourceWatchEvents<KubeObject>>(event: E, fn: (...a: ResourceWatchEvents<KubeObject>[E]) => void): unknown;
}

interface NodeAddress {
  type?: string;
  address?: string;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;

/** A Node's address for the mesh: its first IPv4 InternalIP, else its first IPv4 ExternalIP. */
export function nodeAddress(node: KubeObject): string | undefined {
  const addrs = ((node.status as { addresses?: NodeAddress[] } | undefined)?.addresses ?? []).filter((a) => typeof a.address === 'string' && IPV4.test(a.address));
  return (addrs.find((a) => a.type === 'InternalIP') ?? addrs.find((a) => a.type === 'ExternalIP'))?.address;
}

export interface KubePeerSourceComponents {
  targets: PeerTargets;
  nodes: NodeWatch;
  log: Logger;
}

/** Feeds the mesh the addresses of every Node but this one (`nodeName`). */
export class KubePeerSource implements PeerSource, Startable {
  readonly name = 'kubernetes';
  private addrs: string[] = [];
  private readonly refresh = () => this.recompute();

  constructor(
    private readonly c: KubePeerSourceComponents,
    private readonly nodeName: string,
  ) {}

  async start(): Promise<void> {
    for (const ev of ['add', 'update', 'delete', 'synced'] as const) this.c.nodes.on(ev, this.refresh);
    this.recompute();
  }

  async stop(): Promise<void> {
    for (const ev of ['add', 'update', 'delete', 'synced'] as const) this.c.nodes.off(ev, this.refresh);
  }

  /** The addresses handed to the mesh now, sorted. */
  addresses(): readonly string[] {
    return this.addrs;
  }

  describe(): string {
    if (!this.c.nodes.synced) return `kubernetes: waiting for the node list${this.c.nodes.lastError ? ` (${this.c.nodes.lastError})` : ''}`;
    const n = this.c.nodes.list().length;
    return `kubernetes: ${n} node${n === 1 ? '' : 's'}`;
  }

  private recompute(): void {
    const next: string[] = [];
    for (const node of this.c.nodes.list()) {
      if (node.metadata.name === this.nodeName) continue;
      const a = nodeAddress(node);
      if (a) next.push(a);
      else this.c.log.debug({ node: node.metadata.name }, 'node has no IPv4 InternalIP or ExternalIP; not a peer');
    }
    next.sort();
    const uniq = [...new Set(next)];
    if (uniq.join() === this.addrs.join()) return;
    this.addrs = uniq;
    this.c.log.info({ peers: uniq }, 'peers from the Kubernetes nodes');
    this.c.targets.setTargets(this.name, uniq);
  }
}
