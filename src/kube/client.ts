/**
 * The router's use of the Kubernetes API, through @kubernetes/client-node.
 *
 * Why it is this way: every part (peers, reclaim, the node condition, later the policy part)
 * takes one `KubeClient` and never sees the library: the client is loaded lazily (see
 * load.ts), every request carries a deadline (an abort signal set by a middleware), objects
 * come back as plain JSON in the wire's field names whether they came from a list or a watch
 * event, and failures are `KubeApiError`s with the HTTP status, so callers test `code === 409`
 * rather than the library's exception types.
 */
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import type * as K8sNs from '@kubernetes/client-node';
import { ConfigError, KubeApiError } from '../common/errors';
import { loadK8s, type K8s } from './load';
import type { KubeObject } from '../common/kube-object';

/** Where a pod finds its service account (token, CA, namespace). */
export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** The resources a `ResourceWatch` can follow. */
export type WatchedResource = 'nodes' | 'pods' | 'namespaces' | 'networkpolicies' | 'configmaps';

export interface KubeConfigSource {
  /** `--kubeconfig FILE`; without it the in-cluster configuration is used. */
  kubeconfig?: string;
  /** Environment to read KUBERNETES_SERVICE_HOST/PORT from (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Service account directory prefix, for tests (default ''). */
  saPrefix?: string;
}

/** How the configuration was found, for logs and status. */
export type ConfigOrigin = 'kubeconfig' | 'in-cluster';

/**
 * Whether the router should run in Kubernetes mode: `--kubeconfig` given, or running in a pod
 * (KUBERNETES_SERVICE_HOST set and a service account token mounted).
 */
export function kubeModeWanted(o: KubeConfigSource): boolean {
  if (o.kubeconfig !== undefined) return true;
  const env = o.env ?? process.env;
  return !!env.KUBERNETES_SERVICE_HOST && existsSync(`${o.saPrefix ?? ''}${SERVICE_ACCOUNT_DIR}/token`);
}

/** In a pod (service host set and a token mounted) unless a kubeconfig is given. */
export async function loadKubeConfig(o: KubeConfigSource): Promise<{ kc: K8sNs.KubeConfig; origin: ConfigOrigin }> {
  const k8s = await loadK8s();
  const kc = new k8s.KubeConfig();
  if (o.kubeconfig !== undefined) {
    if (!existsSync(o.kubeconfig)) throw new ConfigError('--kubeconfig', `${o.kubeconfig} does not exist`);
    try {
      kc.loadFromFile(o.kubeconfig);
    } catch (e) {
      throw new ConfigError('--kubeconfig', `${o.kubeconfig}: ${(e as Error).message}`);
    }
    if (!kc.getCurrentCluster()) throw new ConfigError('--kubeconfig', `${o.kubeconfig}: no current context with a cluster`);
    return { kc, origin: 'kubeconfig' };
  }
  const env = o.env ?? process.env;
  const token = `${o.saPrefix ?? ''}${SERVICE_ACCOUNT_DIR}/token`;
  if (!env.KUBERNETES_SERVICE_HOST || !env.KUBERNETES_SERVICE_PORT || !existsSync(token)) {
    throw new ConfigError('--kubeconfig', `not running in a pod (needs KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT and ${token}); give --kubeconfig FILE`);
  }
  const saved = { host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT };
  // loadFromCluster reads process.env itself
  process.env.KUBERNETES_SERVICE_HOST = env.KUBERNETES_SERVICE_HOST;
  process.env.KUBERNETES_SERVICE_PORT = env.KUBERNETES_SERVICE_PORT;
  try {
    kc.loadFromCluster(o.saPrefix);
  } finally {
    restore('KUBERNETES_SERVICE_HOST', saved.host);
    restore('KUBERNETES_SERVICE_PORT', saved.port);
  }
  return { kc, origin: 'in-cluster' };
}

function restore(k: string, v: string | undefined): void {
  if (v === undefined) delete process.env[k];
  else process.env[k] = v;
}

/** `--node-name`, else NODE_NAME (the DaemonSet sets it from spec.nodeName), else the host name. */
export function nodeName(flag?: string, env: NodeJS.ProcessEnv = process.env): string {
  return flag || env.NODE_NAME || hostname();
}

/** The namespace for weft's own objects: POD_NAMESPACE, the service account's, else kube-system. */
export function ownNamespace(env: NodeJS.ProcessEnv = process.env, saPrefix = ''): string {
  if (env.POD_NAMESPACE) return env.POD_NAMESPACE;
  try {
    const ns = readFileSync(`${saPrefix}${SERVICE_ACCOUNT_DIR}/namespace`, 'utf8').trim();
    if (ns) return ns;
  } catch {
    /* not in a pod */
  }
  return 'kube-system';
}

export interface KubeClientOptions extends KubeConfigSource {
  /** Deadline of each request (default 10 s). */
  requestTimeoutMs?: number;
}

/** What a list-then-watch needs of one resource. */
export interface ListSpec {
  /** API path of the collection, e.g. /api/v1/nodes. */
  path: string;
  list: (o: { labelSelector?: string; fieldSelector?: string }) => Promise<{ metadata?: { resourceVersion?: string }; items: KubeObject[] }>;
}

export class KubeClient {
  readonly requestTimeoutMs: number;
  private readonly core: K8sNs.CoreV1Api;
  private readonly net: K8sNs.NetworkingV1Api;

  private constructor(
    readonly k8s: K8s,
    readonly kc: K8sNs.KubeConfig,
    readonly origin: ConfigOrigin,
    o: KubeClientOptions,
  ) {
    this.requestTimeoutMs = o.requestTimeoutMs ?? 10_000;
    this.core = kc.makeApiClient(k8s.CoreV1Api);
    this.net = kc.makeApiClient(k8s.NetworkingV1Api);
  }

  static async create(o: KubeClientOptions): Promise<KubeClient> {
    const k8s = await loadK8s();
    const { kc, origin } = await loadKubeConfig(o);
    return new KubeClient(k8s, kc, origin, o);
  }

  /** The API server's URL (for logs). */
  get server(): string {
    return this.kc.getCurrentCluster()?.server ?? '';
  }

  /** Request options: a deadline, and a Content-Type when given (PATCH flavours). */
  private opts(contentType?: string): K8sNs.ConfigurationOptions {
    const { Observable } = this.k8s;
    const ms = this.requestTimeoutMs;
    const deadline = {
      pre: (ctx: K8sNs.RequestContext) => {
        ctx.setSignal(AbortSignal.timeout(ms));
        if (contentType) ctx.setHeaderParam('Content-Type', contentType);
        return new Observable(Promise.resolve(ctx));
      },
      post: (rsp: K8sNs.ResponseContext) => new Observable(Promise.resolve(rsp)),
    };
    return { middleware: [deadline], middlewareMergeStrategy: 'append' };
  }

  /** Runs one request; failures become KubeApiError with the status code. */
  private async call<T>(what: string, fn: (opts: K8sNs.ConfigurationOptions) => Promise<T>, contentType?: string): Promise<T> {
    try {
      return await fn(this.opts(contentType));
    } catch (e) {
      throw this.wrap(what, e);
    }
  }

  private wrap(what: string, e: unknown): KubeApiError {
    if (e instanceof this.k8s.ApiException) {
      let body: { message?: string; reason?: string } | undefined;
      try {
        body = typeof e.body === 'string' ? JSON.parse(e.body) : (e.body as typeof body);
      } catch {
        body = undefined;
      }
      return new KubeApiError(`${what}: ${body?.message ?? `HTTP ${e.code}`}`, e.code, body?.reason);
    }
    const err = e as Error;
    if (err?.name === 'TimeoutError' || err?.name === 'AbortError') return new KubeApiError(`${what}: no answer from ${this.server} within ${this.requestTimeoutMs} ms`);
    return new KubeApiError(`${what}: ${err?.message ?? String(e)}${(err?.cause as Error)?.message ? ` (${(err.cause as Error).message})` : ''}`);
  }

  /** Plain JSON in the wire's field names (dates as strings), as a watch event has them. */
  private plain<T>(obj: unknown, type: string): T {
    return this.k8s.ObjectSerializer.serialize(obj, type) as T;
  }

  async getNode(name: string): Promise<KubeObject> {
    return this.plain(await this.call(`get node ${name}`, (o) => this.core.readNode({ name }, o)), 'V1Node');
  }

  /** Strategic merge PATCH of nodes/NAME/status (conditions merge by type). */
  async patchNodeStatus(name: string, patch: object): Promise<KubeObject> {
    const r = await this.call(`patch node ${name} status`, (o) => this.core.patchNodeStatus({ name, body: patch }, o), this.k8s.PatchStrategy.StrategicMergePatch);
    return this.plain(r, 'V1Node');
  }

  /** The ConfigMap, or undefined when there is none. */
  async getConfigMap(namespace: string, name: string): Promise<KubeObject | undefined> {
    try {
      return this.plain(await this.call(`get configmap ${namespace}/${name}`, (o) => this.core.readNamespacedConfigMap({ namespace, name }, o)), 'V1ConfigMap');
    } catch (e) {
      if (e instanceof KubeApiError && e.code === 404) return undefined;
      throw e;
    }
  }

  /** Creates a ConfigMap; 409 (KubeApiError) when it exists. */
  async createConfigMap(namespace: string, body: KubeObject): Promise<KubeObject> {
    const r = await this.call(`create configmap ${namespace}/${body.metadata.name}`, (o) => this.core.createNamespacedConfigMap({ namespace, body: body as K8sNs.V1ConfigMap }, o));
    return this.plain(r, 'V1ConfigMap');
  }

  /** Replaces a ConfigMap; 409 (KubeApiError) when its metadata.resourceVersion is stale. */
  async replaceConfigMap(namespace: string, body: KubeObject): Promise<KubeObject> {
    const name = body.metadata.name!;
    const r = await this.call(`update configmap ${namespace}/${name}`, (o) => this.core.replaceNamespacedConfigMap({ namespace, name, body: body as K8sNs.V1ConfigMap }, o));
    return this.plain(r, 'V1ConfigMap');
  }

  /** The path and list call of a resource, all namespaces or one. */
  listSpec(resource: WatchedResource, namespace?: string): ListSpec {
    const c = this.core;
    const n = this.net;
    const ns = namespace;
    const go = <T>(what: string, type: string, fn: (o: K8sNs.ConfigurationOptions) => Promise<T>) => async () =>
      this.plain<{ metadata?: { resourceVersion?: string }; items: KubeObject[] }>(await this.call(`list ${what}`, fn), type);
    const core = (plural: string) => (ns ? `/api/v1/namespaces/${ns}/${plural}` : `/api/v1/${plural}`);
    switch (resource) {
      case 'nodes':
        return { path: '/api/v1/nodes', list: (q) => go('nodes', 'V1NodeList', (o) => c.listNode(q, o))() };
      case 'namespaces':
        return { path: '/api/v1/namespaces', list: (q) => go('namespaces', 'V1NamespaceList', (o) => c.listNamespace(q, o))() };
      case 'pods':
        return { path: core('pods'), list: (q) => go('pods', 'V1PodList', (o) => (ns ? c.listNamespacedPod({ namespace: ns, ...q }, o) : c.listPodForAllNamespaces(q, o)))() };
      case 'configmaps':
        return {
          path: core('configmaps'),
          list: (q) => go('configmaps', 'V1ConfigMapList', (o) => (ns ? c.listNamespacedConfigMap({ namespace: ns, ...q }, o) : c.listConfigMapForAllNamespaces(q, o)))(),
        };
      case 'networkpolicies':
        return {
          path: ns ? `/apis/networking.k8s.io/v1/namespaces/${ns}/networkpolicies` : '/apis/networking.k8s.io/v1/networkpolicies',
          list: (q) =>
            go('networkpolicies', 'V1NetworkPolicyList', (o) => (ns ? n.listNamespacedNetworkPolicy({ namespace: ns, ...q }, o) : n.listNetworkPolicyForAllNamespaces(q, o)))(),
        };
    }
  }
}
