/**
 * List-then-watch of one resource, kept going: the part every Kubernetes feature of weft
 * builds on (Nodes for peers and reclaim; Pods, Namespaces and NetworkPolicies for policy).
 *
 * Why it is this way: the client's informer (`ListWatch`) lists, watches from the list's
 * resourceVersion, resumes after a closed stream, and lists again after 410 Gone; but after
 * any other failure (API server down, 5xx, a failed list) it stops for good. This wrapper
 * starts it again with capped, jittered back-off, so a watch survives an API server restart,
 * and says when the first list has arrived (`synced`), which callers wait for with a deadline
 * before trusting an empty cache.
 */
import { EventEmitter } from 'node:events';
import type * as K8sNs from '@kubernetes/client-node';
import { KubeApiError } from '../common/errors';
import { Timers, type Startable } from '../common/lifecycle';
import type { Logger } from '../common/log';
import type { KubeClient, WatchedResource } from './client';
import type { KubeObject } from '../common/kube-object';

export interface WatchSpec {
  resource: WatchedResource;
  /** One namespace; undefined: all (or cluster-scoped). */
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** First retry delay after a failure (default 500 ms); doubles up to `retryMaxMs` (default 30 s). */
  retryMinMs?: number;
  retryMaxMs?: number;
}

/** Events of a ResourceWatch, by name. */
export interface ResourceWatchEvents<T> {
  add: [T];
  update: [T];
  delete: [T];
  /** The first list (and every re-list) has been applied to the cache. */
  synced: [];
  /** A failure; the watch retries by itself. */
  error: [Error];
}

export interface ResourceWatchComponents {
  client: KubeClient;
  log: Logger;
}

export class ResourceWatch<T extends KubeObject = KubeObject> extends EventEmitter<ResourceWatchEvents<T>> implements Startable {
  private informer: K8sNs.ListWatch<T> | undefined;
  private readonly timers = new Timers();
  private failures = 0;
  private stopped = true;
  /** True once a list has been applied; stays true across re-lists. */
  synced = false;
  /** The last failure, for status; cleared by a successful list. */
  lastError: string | undefined;

  constructor(
    private readonly c: ResourceWatchComponents,
    readonly spec: WatchSpec,
  ) {
    super();
  }

  async start(): Promise<void> {
    if (!this.stopped) return;
    this.stopped = false;
    const { k8s } = this.c.client;
    const ls = this.c.client.listSpec(this.spec.resource, this.spec.namespace);
    const q = { labelSelector: this.spec.labelSelector, fieldSelector: this.spec.fieldSelector };
    const list = async () => {
      const l = await ls.list(q);
      // the informer applies the list right after this promise settles; tell once it has
      setImmediate(() => this.listed());
      return l as unknown as K8sNs.KubernetesListObject<T>;
    };
    const inf = new k8s.ListWatch<T>(ls.path, new k8s.Watch(this.c.client.kc), list, false, this.spec.labelSelector, this.spec.fieldSelector);
    inf.on('add', (o) => this.emit('add', o));
    inf.on('update', (o) => this.emit('update', o));
    inf.on('delete', (o) => this.emit('delete', o));
    inf.on('error', (e) => this.failed(e));
    this.informer = inf;
    void inf.start().catch((e: unknown) => this.failed(e));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.timers.clear();
    await this.informer?.stop();
  }

  /** Objects in the cache now (empty before the first list). */
  list(namespace?: string): readonly T[] {
    return this.informer?.list(namespace) ?? [];
  }

  /** The resourceVersion the cache is at: its last list's or event's (undefined before the first list). */
  resourceVersion(): string | undefined {
    return this.informer?.latestResourceVersion() || undefined;
  }

  get(name: string, namespace?: string): T | undefined {
    return this.informer?.get(name, namespace);
  }

  /** Resolves once the first list is in the cache; rejects with KubeApiError after `timeoutMs`. */
  waitSynced(timeoutMs: number): Promise<void> {
    if (this.synced) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.off('synced', done);
        const why = this.lastError ? `: ${this.lastError}` : '';
        reject(new KubeApiError(`no list of ${this.spec.resource} from the API within ${timeoutMs} ms${why}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(t);
        resolve();
      };
      this.once('synced', done);
    });
  }

  private listed(): void {
    this.failures = 0;
    this.lastError = undefined;
    this.synced = true;
    this.emit('synced');
  }

  private failed(e: unknown): void {
    if (this.stopped) return;
    const err = e instanceof Error ? e : new Error(String(e));
    this.lastError = err.message;
    const min = this.spec.retryMinMs ?? 500;
    const max = this.spec.retryMaxMs ?? 30_000;
    const delay = Math.min(max, min * 2 ** this.failures++) * (0.75 + Math.random() * 0.5);
    this.c.log.warn({ resource: this.spec.resource, err: err.message, retryMs: Math.round(delay) }, 'watch failed; retrying');
    if (this.listenerCount('error') > 0) this.emit('error', err);
    this.timers.after(delay, () => {
      if (!this.stopped) void this.informer?.start().catch((x: unknown) => this.failed(x));
    });
  }
}
