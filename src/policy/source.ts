/**
 * What the policy engine enforces, gathered: Pods, Namespaces and NetworkPolicies from the
 * Kubernetes API (one watch each), the pods attached on this host and this host's own addresses
 * on the pod network; every change becomes one `engine.update` of the whole state.
 *
 * Why it is this way:
 * - Level-triggered: an update reads the watches' caches whole (parsing only objects whose
 *   resourceVersion changed), never applies events one by one, so a lost event, a re-list after
 *   410 Gone or a restarted watch heals with the next update.
 * - Nothing is sent before all three lists have arrived: a partial view would open pods (a
 *   policy not listed yet) or close them (a peer's pod or namespace not listed yet). Until then
 *   the rules a previous run left stay in force (the engine never flushes on start).
 * - An object that does not parse (which a real API server would have refused) is logged once
 *   per resourceVersion and left out; the rest is enforced.
 * - Bursts (a list's worth of ADDED events, a namespace deleted with its pods) are built into
 *   one input; the engine debounces further and writes one transaction.
 * - This host's attachments and addresses are compared with the last update every
 *   `localPollMs` and on `kick()` (the router kicks on every CNI ADD/DEL and gateway change):
 *   the router has no event for every path that changes them (releases recorded while it was
 *   down, GC, expose).
 */
import { performance } from 'node:perf_hooks';
import { ObjectError } from '../common/errors';
import { Timers, type Startable } from '../common/lifecycle';
import type { Logger } from '../common/log';
import { parseNamespace, parseNetworkPolicy, parsePod, type LocalPod, type Namespace, type NetworkPolicy, type Pod, type PolicyInput } from './model';
import type { KubeObject } from '../common/kube-object';

/** The API resources the policy part watches (the manifest's RBAC must allow list and watch on each). */
export const POLICY_RESOURCES = ['pods', 'namespaces', 'networkpolicies'] as const;
export type PolicyResource = (typeof POLICY_RESOURCES)[number];

/** What the source uses of a watch (a `ResourceWatch`): its cache, its events, whether it has listed. */
export interface WatchedObjects extends Startable {
  readonly synced: boolean;
  /** The last failure, while the watch retries. */
  readonly lastError?: string;
  list(): readonly KubeObject[];
  /** The resourceVersion the cache is at (its list's or last event's), when known. */
  resourceVersion?(): string | undefined;
  on(event: 'add' | 'update' | 'delete', fn: (o: KubeObject) => void): unknown;
  on(event: 'synced', fn: () => void): unknown;
}

export interface PolicySourceComponents {
  /** One watch per resource; the source starts and stops them. */
  watches: Readonly<Record<PolicyResource, WatchedObjects>>;
  engine: { update(input: PolicyInput): Promise<void> };
  /** Pods attached on this host: address (no prefix) and the namespace/name CNI_ARGS gave. */
  local(): readonly LocalPod[];
  /** This host's own addresses on the pod network (the bridge's). */
  nodeAddresses(): readonly string[];
  log: Logger;
  /** Seconds from a change seen on a watch to the kernel enforcing it. */
  enforced?(seconds: number): void;
}

export interface PolicySourceInit {
  /** Service ranges (`--service-cidr`): egress to them is checked after DNAT. */
  exempt?: readonly string[];
  /** How often this host's attachments and addresses are compared with the last update (default 1000 ms). */
  localPollMs?: number;
  /** Changes within this time are built into one input (default 10 ms). */
  coalesceMs?: number;
  /** First retry after a refused update (default 1000 ms, doubling to 30 s). */
  retryMinMs?: number;
}

/** For `weft status policy`. */
export interface PolicySourceStatus {
  /** Every list has arrived: updates flow. */
  synced: boolean;
  /** Resources whose first list has not arrived, with the watch's last error. */
  waitingFor: { resource: PolicyResource; error?: string }[];
  /** Objects in the last update, per resource. */
  objects: Record<PolicyResource, number>;
  /** Pods attached on this host, in the last update. */
  local: number;
  /** Objects left out because they are malformed (at most 20). */
  skipped: { object: string; error: string }[];
  /** resourceVersion of the newest API change the kernel enforces. */
  enforcedVersion?: string;
  /** A change is seen and not enforced yet. */
  pending: boolean;
  lastError?: string;
}

interface Parsed<T> {
  rv: string | undefined;
  value?: T;
  error?: string;
}

const PARSERS: { [R in PolicyResource]: (raw: unknown) => unknown } = { pods: parsePod, namespaces: parseNamespace, networkpolicies: parseNetworkPolicy };
const keyOf = (o: KubeObject) => `${o.metadata.namespace ?? ''}/${o.metadata.name ?? ''}`;

/** The newer of two resourceVersions: numerically when both are numbers (etcd's and the test server's are), else the later seen. */
function newer(a: string | undefined, b: string | undefined): string | undefined {
  if (!a || !b) return b || a || undefined;
  if (/^\d+$/.test(a) && /^\d+$/.test(b)) return BigInt(b) >= BigInt(a) ? b : a;
  return b;
}

export class PolicySource implements Startable {
  private readonly timers = new Timers();
  private readonly cache: Record<PolicyResource, Map<string, Parsed<unknown>>> = { pods: new Map(), namespaces: new Map(), networkpolicies: new Map() };
  private readonly init: Required<Omit<PolicySourceInit, 'exempt'>> & { exempt: readonly string[] };
  private started = false;
  private flushTimer: NodeJS.Timeout | undefined;
  /** When the oldest API change not yet sent to the engine was seen. */
  private dirtySince: number | undefined;
  private dirty = false;
  private seenRv: string | undefined;
  private enforcedRv: string | undefined;
  private lastLocal = '';
  private inflight = 0;
  private retryMs = 0;
  private lastError: string | undefined;
  private counts: Record<PolicyResource, number> = { pods: 0, namespaces: 0, networkpolicies: 0 };
  private localCount = 0;
  private readonly skipped = new Map<string, string>();

  constructor(
    private readonly c: PolicySourceComponents,
    init: PolicySourceInit = {},
  ) {
    this.init = { localPollMs: 1000, coalesceMs: 10, retryMinMs: 1000, exempt: [], ...init };
  }

  async start(): Promise<void> {
    this.started = true;
    for (const r of POLICY_RESOURCES) {
      const w = this.c.watches[r];
      const changed = (o: KubeObject) => this.changed(o);
      w.on('add', changed);
      w.on('update', changed);
      w.on('delete', changed);
      w.on('synced', () => this.relisted());
    }
    for (const r of POLICY_RESOURCES) await this.c.watches[r].start();
    this.timers.every(this.init.localPollMs, () => this.kick());
  }

  async stop(): Promise<void> {
    this.started = false;
    this.timers.clear();
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    for (const r of POLICY_RESOURCES) await this.c.watches[r].stop();
  }

  /** This host's attachments or addresses may have changed: an update follows when they did. */
  kick(): void {
    if (this.started && this.allSynced() && this.localKey() !== this.lastLocal) this.schedule(0);
  }

  private allSynced(): boolean {
    return POLICY_RESOURCES.every((r) => this.c.watches[r].synced);
  }

  private changed(o: KubeObject): void {
    this.seenRv = newer(this.seenRv, o.metadata.resourceVersion);
    // the lists' ADDED events before the first update are not changes to time
    if (this.allSynced()) this.dirtySince ??= performance.now();
    this.dirty = true;
    this.schedule(this.init.coalesceMs);
  }

  private relisted(): void {
    this.dirty = true;
    this.schedule(this.init.coalesceMs);
  }

  private schedule(ms: number): void {
    if (!this.started || this.flushTimer) return;
    this.flushTimer = setTimeout(() => this.flush(), ms);
    this.flushTimer.unref();
  }

  private localKey(): string {
    return JSON.stringify([this.c.local(), this.c.nodeAddresses()]);
  }

  private flush(): void {
    this.flushTimer = undefined;
    if (!this.started || !this.allSynced()) return;
    const since = this.dirtySince;
    this.dirtySince = undefined;
    this.dirty = false;
    let input: PolicyInput;
    let rv: string | undefined;
    try {
      input = this.build();
      rv = this.seenRv;
    } catch (e) {
      this.lastError = (e as Error).message;
      this.c.log.error({ err: this.lastError }, 'building the network policy input failed');
      return;
    }
    this.inflight++;
    this.c.engine.update(input).then(
      () => {
        this.inflight--;
        this.retryMs = 0;
        this.lastError = undefined;
        this.enforcedRv = newer(this.enforcedRv, rv);
        if (since !== undefined) this.c.enforced?.((performance.now() - since) / 1000);
      },
      (e: Error) => {
        this.inflight--;
        this.lastError = e.message;
        // the engine keeps the wanted state; this sends it again (fresh) after a pause
        this.retryMs = Math.min(30_000, Math.max(this.init.retryMinMs, this.retryMs * 2));
        this.dirty = true;
        if (since !== undefined) this.dirtySince = Math.min(this.dirtySince ?? since, since);
        if (this.started && !this.flushTimer) this.flushTimer = setTimeout(() => this.flush(), this.retryMs).unref();
      },
    );
  }

  /** The engine's input from the caches as they are now. */
  build(): PolicyInput {
    const pods = this.parsedOf<Pod>('pods');
    const namespaces = this.parsedOf<Namespace>('namespaces');
    const policies = this.parsedOf<NetworkPolicy>('networkpolicies');
    // a deletion leaves no object behind to carry its resourceVersion; the caches' own do
    for (const r of POLICY_RESOURCES) this.seenRv = newer(this.seenRv, this.c.watches[r].resourceVersion?.());
    const local = [...this.c.local()];
    const nodeAddresses = [...this.c.nodeAddresses()];
    this.lastLocal = JSON.stringify([local, nodeAddresses]);
    this.counts = { pods: pods.length, namespaces: namespaces.length, networkpolicies: policies.length };
    this.localCount = local.length;
    return { pods, namespaces, policies, local, nodeAddresses, exempt: this.init.exempt };
  }

  /** The objects of a watch's cache, parsed (each once per resourceVersion); malformed ones logged once and left out. */
  private parsedOf<T>(r: PolicyResource): T[] {
    const cache = this.cache[r];
    const seen = new Set<string>();
    const out: T[] = [];
    for (const o of this.c.watches[r].list()) {
      const key = keyOf(o);
      const rv = o.metadata.resourceVersion;
      this.seenRv = newer(this.seenRv, rv);
      seen.add(key);
      let p = cache.get(key);
      if (!p || p.rv !== rv || rv === undefined) {
        p = { rv };
        try {
          p.value = PARSERS[r](o);
          this.skipped.delete(`${r}:${key}`);
        } catch (e) {
          // ObjectError names the object and field; anything else is a parser's bug, kept to this object all the same
          p.error = e instanceof ObjectError ? e.message : `${r} ${key}: ${(e as Error).message}`;
          this.skipped.set(`${r}:${key}`, p.error);
          this.c.log.warn({ resource: r, object: key, err: p.error }, 'object left out of network policy: it is malformed');
        }
        cache.set(key, p);
      }
      if (p.value !== undefined) out.push(p.value as T);
    }
    for (const key of cache.keys()) {
      if (seen.has(key)) continue;
      cache.delete(key);
      this.skipped.delete(`${r}:${key}`);
    }
    return out;
  }

  status(): PolicySourceStatus {
    return {
      synced: this.allSynced(),
      waitingFor: POLICY_RESOURCES.filter((r) => !this.c.watches[r].synced).map((r) => ({ resource: r, error: this.c.watches[r].lastError })),
      objects: { ...this.counts },
      local: this.localCount,
      skipped: [...this.skipped].slice(0, 20).map(([k, error]) => ({ object: k, error })),
      enforcedVersion: this.enforcedRv,
      pending: this.dirty || this.inflight > 0 || !!this.flushTimer,
      lastError: this.lastError,
    };
  }
}
