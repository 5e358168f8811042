/**
 * The router's Kubernetes mode in one place, for the composition root: one client, one Node
 * watch and one peer record shared by the parts (peer source, reclaimer, node condition), and
 * the two decisions that must be taken before IPAM loads its state.
 *
 * Order in the router (see each part for why):
 *   1. `KubeMode.connect` (client, Node watch, first list within a deadline);
 *   2. the peer name is known; `prepare(self)`: registers in the record and returns
 *      whether to wipe the IPAM state and which init mode a ring-less IPAM starts with;
 *   3. IPAM loads (or not, on 'wipe') and is constructed with that init mode;
 *   4. start `peerSource(targets)` with the mesh, then `reclaimer({ ipam, mesh })`;
 *   5. when readiness first turns true: `condition().dataPathReady()`;
 *   6. on shutdown: stop the parts, then `stop()`.
 */
import type { Logger } from '../common/log';
import type { IpamInit } from '../ipam/service';
import type { PeerTargets } from '../mesh/peer-source';
import { ipamInitFromCluster, type BootstrapDecision } from './bootstrap';
import { KubeClient, nodeName as defaultNodeName, ownNamespace, type ConfigOrigin } from './client';
import { NodeCondition } from './condition';
import { KubePeerSource } from './peers';
import { Reclaimer, registerAndDecide, type IpamStateDecision, type ReclaimComponents, type ReclaimOptions } from './reclaim';
import { RecordStore, type LastReclaim } from './record';
import { ResourceWatch } from './watch';

export interface KubeModeOptions {
  /** `--kubeconfig`; without it, the in-cluster configuration. */
  kubeconfig?: string;
  /** `--node-name`; default NODE_NAME, else the host name. */
  nodeName?: string;
  /** Namespace of the peer record; default POD_NAMESPACE, the service account's, else kube-system. */
  namespace?: string;
  /** Deadline for the first Node list (default 60 s). */
  syncTimeoutMs?: number;
  /** Deadline of each API request (default 10 s). */
  requestTimeoutMs?: number;
  log: Logger;
}

export class KubeMode {
  private source: KubePeerSource | undefined;
  private rec: Reclaimer | undefined;
  private cond: NodeCondition | undefined;

  private constructor(
    readonly client: KubeClient,
    readonly nodes: ResourceWatch,
    readonly record: RecordStore,
    readonly nodeName: string,
    private readonly log: Logger,
  ) {}

  /** Loads the configuration, starts the Node watch and waits for its first list. */
  static async connect(o: KubeModeOptions): Promise<KubeMode> {
    const log = o.log.child({ component: 'kube' });
    const client = await KubeClient.create({ kubeconfig: o.kubeconfig, requestTimeoutMs: o.requestTimeoutMs });
    const nodes = new ResourceWatch({ client, log }, { resource: 'nodes' });
    const record = new RecordStore({ api: client, log }, { namespace: o.namespace ?? ownNamespace() });
    const name = defaultNodeName(o.nodeName);
    await nodes.start();
    try {
      await nodes.waitSynced(o.syncTimeoutMs ?? 60_000);
    } catch (e) {
      await nodes.stop();
      throw e;
    }
    if (!nodes.get(name)) log.warn({ node: name, nodes: nodes.list().length }, 'this node is not in the Node list; check --node-name / NODE_NAME');
    log.info({ config: client.origin, server: client.server, node: name, nodes: nodes.list().length, record: `${record.namespace}/${record.name}` }, 'Kubernetes mode');
    return new KubeMode(client, nodes, record, name, log);
  }

  get origin(): ConfigOrigin {
    return this.client.origin;
  }

  /**
   * Before IPAM loads: registers `self` (the peer name) on this Node in the record and
   * decides whether the IPAM state on disk may be used, and which init mode an IPAM without a
   * ring starts with (`explicit`: the operator's `--ipalloc-init`, which wins).
   */
  async prepare(self: string, explicit?: IpamInit): Promise<{ state: IpamStateDecision; bootstrap: BootstrapDecision }> {
    const before = await this.record.read();
    const bootstrap = explicit ? { init: explicit, reason: 'given by --ipalloc-init' } : ipamInitFromCluster({ self, nodes: this.nodes.list(), record: before });
    const state = await registerAndDecide({ record: this.record, log: this.log }, { self, nodeName: this.nodeName });
    this.log.info({ state: state.decision, why: state.reason, init: bootstrap.init, initWhy: bootstrap.reason }, 'IPAM start decided');
    return { state, bootstrap };
  }

  /** The peer source feeding the mesh with the other Nodes' addresses (start it with the mesh). */
  peerSource(targets: PeerTargets): KubePeerSource {
    return (this.source ??= new KubePeerSource({ targets, nodes: this.nodes, log: this.log }, this.nodeName));
  }

  /** The reclaimer (start it once IPAM and the mesh run). */
  reclaimer(c: Pick<ReclaimComponents, 'self' | 'ipam' | 'mesh' | 'onSelfReclaimed'>, o?: ReclaimOptions): Reclaimer {
    return (this.rec ??= new Reclaimer({ ...c, nodeName: this.nodeName, record: this.record, nodes: this.nodes, log: this.log }, o));
  }

  /** The NetworkUnavailable condition of this Node. */
  condition(): NodeCondition {
    return (this.cond ??= new NodeCondition({ client: this.client, nodeName: this.nodeName, log: this.log }));
  }

  /** For `weft status` and the report: the peer source line and the last reclaim. */
  status(): { source: string; nodeName: string; lastReclaim?: LastReclaim; claims: number; peers: number } {
    const r = this.rec?.status() ?? { claims: 0, peers: 0 };
    return { source: this.source?.describe() ?? `kubernetes: ${this.nodes.list().length} nodes`, nodeName: this.nodeName, ...r };
  }

  /** Stops the Node watch (stop the parts first). */
  async stop(): Promise<void> {
    await this.nodes.stop();
  }
}
