/**
 * The Node's `NetworkUnavailable` condition: cloud providers and some installers set it True
 * on a new Node (the node lifecycle controller then taints the Node so no pod lands there)
 * until the network plugin says otherwise. The router sets it False once its data path works,
 * by a strategic merge PATCH of `nodes/NAME/status` (conditions merge by type, so the kubelet's
 * own conditions are left alone). It never sets it True again: a router restarting, or a
 * readiness dip, must not evict the Node's pods; the kernel keeps forwarding meanwhile.
 */
import { KubeApiError } from '../common/errors';
import { sleepUnless, type Startable } from '../common/lifecycle';
import type { Logger } from '../common/log';
import { isoTime } from '../common/time';
import type { KubeObject } from '../common/kube-object';

export const CONDITION_TYPE = 'NetworkUnavailable';
export const CONDITION_REASON = 'WeftIsUp';

export interface NodeConditionComponents {
  client: {
    getNode(name: string): Promise<KubeObject>;
    patchNodeStatus(name: string, patch: object): Promise<KubeObject>;
  };
  nodeName: string;
  log: Logger;
}

interface Condition {
  type: string;
  status: string;
  reason?: string;
}

export class NodeCondition implements Startable {
  private readonly abort = new AbortController();
  private pending: Promise<boolean> | undefined;
  /** True once the API has the condition False. */
  done = false;

  constructor(
    private readonly c: NodeConditionComponents,
    private readonly o: { retryMinMs?: number; retryMaxMs?: number } = {},
  ) {}

  async start(): Promise<void> {}

  async stop(): Promise<void> {
    this.abort.abort();
    await this.pending;
  }

  /**
   * The router calls this when its data path is ready. Patches the condition (retrying with
   * back-off until it succeeds or the part stops); resolves true once the Node has it False.
   * Calls after the first are free.
   */
  dataPathReady(): Promise<boolean> {
    return (this.pending ??= this.run());
  }

  private async run(): Promise<boolean> {
    let delay = this.o.retryMinMs ?? 500;
    while (!this.abort.signal.aborted) {
      try {
        await this.patchOnce();
        this.done = true;
        return true;
      } catch (e) {
        this.c.log.warn({ node: this.c.nodeName, err: (e as Error).message, retryMs: delay }, `setting ${CONDITION_TYPE}=False failed; retrying`);
        await sleepUnless(delay, this.abort.signal);
        delay = Math.min(this.o.retryMaxMs ?? 30_000, delay * 2);
      }
    }
    return false;
  }

  private async patchOnce(): Promise<void> {
    const node = await this.c.client.getNode(this.c.nodeName);
    const conds = ((node.status as { conditions?: Condition[] } | undefined)?.conditions ?? []) as Condition[];
    const cur = conds.find((x) => x.type === CONDITION_TYPE);
    if (cur?.status === 'False' && cur.reason === CONDITION_REASON) {
      this.c.log.debug({ node: this.c.nodeName }, `${CONDITION_TYPE} already False`);
      return;
    }
    const now = isoTime().replace(/\.\d+Z$/, 'Z');
    const patch = {
      status: {
        conditions: [{ type: CONDITION_TYPE, status: 'False', reason: CONDITION_REASON, message: 'weft is running on this node', lastTransitionTime: now, lastHeartbeatTime: now }],
      },
    };
    const after = await this.c.client.patchNodeStatus(this.c.nodeName, patch);
    const set = ((after.status as { conditions?: Condition[] } | undefined)?.conditions ?? []).find((x) => x.type === CONDITION_TYPE);
    if (set?.status !== 'False') throw new KubeApiError(`node ${this.c.nodeName}: the patch did not set ${CONDITION_TYPE}=False`);
    this.c.log.info({ node: this.c.nodeName }, `set ${CONDITION_TYPE}=False on the node`);
  }
}
