/**
 * A small Kubernetes API server over plain HTTP, for tests and `weft sandbox up --kube`: no
 * real API server can run on the machines weft is tested on, so the routers' Kubernetes mode
 * talks to this one through the same client and the same documented REST protocol
 * (https://kubernetes.io/docs/reference/using-api/api-concepts/).
 *
 * Paths: `/api/v1/...` and `/apis/GROUP/VERSION/...`, cluster-scoped (`/api/v1/nodes/NAME`)
 * and namespaced (`/api/v1/namespaces/NS/configmaps/NAME`), lists across namespaces
 * (`/api/v1/pods`), the `/status` subresource, and the discovery documents. A watch
 * (`?watch=1`) answers 200 with its headers flushed at once (the client's informer waits for
 * them), then one JSON event per line.
 */
import { promises as fs } from 'node:fs';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { nodeHttp } from '../../common/lazy';
import { ObjectStore, type PatchType, type Selection } from './store';
import { ApiError, apiVersionOf, badRequest, RESOURCES, resourceByPlural, type ResourceType } from './types';
import type { KubeObject } from '../../common/kube-object';

const MAX_BODY = 3 * 1024 * 1024;

export interface ApiServerOptions {
  /** Address to listen on (default 127.0.0.1). */
  host?: string;
  /** TCP port (default 0: any free one). */
  port?: number;
  /**
   * Also (or, without host and port, only) listen on this unix socket: the sandbox reaches the
   * server through it from the machine's namespace (see admin.ts), routers through TCP.
   */
  socket?: string;
  /** When set, requests must carry `Authorization: Bearer TOKEN`. */
  token?: string;
  /** Changes kept for watches to resume from (default 10,000). */
  historyLimit?: number;
  /** Serve this store (e.g. one that outlived a previous server) instead of a new one. */
  store?: ObjectStore;
}

interface Route {
  type: ResourceType;
  namespace?: string;
  name?: string;
  status: boolean;
}

function parsePath(path: string): { discovery: unknown } | Route | undefined {
  const segs = path.split('/').filter(Boolean).map(decodeURIComponent);
  if (segs.length === 0) return { discovery: { paths: ['/api', '/api/v1', '/apis', '/version', ...groups().map((g) => `/apis/${g}`)] } };
  if (segs[0] === 'version' && segs.length === 1) return { discovery: { major: '1', minor: '34', gitVersion: 'v1.34.0-weft-test', platform: 'linux/amd64' } };
  if (segs[0] === 'api' && segs.length === 1) return { discovery: { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [] } };
  if (segs[0] === 'apis' && segs.length === 1) return { discovery: { kind: 'APIGroupList', apiVersion: 'v1', groups: groups().map(groupDoc) } };
  let group: string;
  let version: string;
  let rest: string[];
  if (segs[0] === 'api') [group, version, rest] = ['', segs[1]!, segs.slice(2)];
  else if (segs[0] === 'apis' && segs.length === 2) return groups().includes(segs[1]!) ? { discovery: { kind: 'APIGroup', apiVersion: 'v1', ...groupDoc(segs[1]!) } } : undefined;
  else if (segs[0] === 'apis') [group, version, rest] = [segs[1]!, segs[2]!, segs.slice(3)];
  else return undefined;
  const ofGv = RESOURCES.filter((r) => r.group === group && r.version === version);
  if (ofGv.length === 0) return undefined;
  if (rest.length === 0) {
    const resources = ofGv.flatMap((r) => [
      { name: r.plural, singularName: r.kind.toLowerCase(), namespaced: r.namespaced, kind: r.kind, verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'] },
      ...(r.statusSubresource ? [{ name: `${r.plural}/status`, singularName: '', namespaced: r.namespaced, kind: r.kind, verbs: ['get', 'patch', 'update'] }] : []),
    ]);
    return { discovery: { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: group ? `${group}/${version}` : version, resources } };
  }
  const find = (plural: string) => ofGv.find((r) => r.plural === plural);
  // /namespaces/NS/PLURAL[/NAME[/status]] unless it is the namespace object itself
  if (rest[0] === 'namespaces' && rest.length >= 3 && !(rest.length === 3 && rest[2] === 'status')) {
    const t = find(rest[2]!);
    if (!t || !t.namespaced || rest.length > 5 || (rest.length === 5 && rest[4] !== 'status')) return undefined;
    return { type: t, namespace: rest[1], name: rest[3], status: rest.length === 5 };
  }
  const t = find(rest[0]!);
  if (!t || rest.length > 3 || (rest.length === 3 && rest[2] !== 'status')) return undefined;
  if (t.namespaced && rest.length > 1) return undefined;
  return { type: t, name: rest[1], status: rest.length === 3 };
}

function groups(): string[] {
  return [...new Set(RESOURCES.map((r) => r.group).filter(Boolean))];
}

function groupDoc(g: string) {
  const v = RESOURCES.find((r) => r.group === g)!.version;
  const gv = { groupVersion: `${g}/${v}`, version: v };
  return { name: g, versions: [gv], preferredVersion: gv };
}

function patchType(contentType: string | undefined): PatchType {
  const ct = (contentType ?? '').split(';')[0]!.trim();
  if (ct === 'application/json-patch+json') return 'json';
  if (ct === 'application/merge-patch+json') return 'merge';
  if (ct === 'application/strategic-merge-patch+json') return 'strategic';
  throw new ApiError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got "${ct}")`);
}

function readBody(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new ApiError(413, 'BadRequest', 'request entity too large'));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      if (text.trim() === '') return resolve(undefined);
      try {
        resolve(JSON.parse(text));
      } catch (e) {
        reject(badRequest(`the body is not JSON: ${(e as Error).message}`));
      }
    });
    req.on('error', reject);
  });
}

function send(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** A running test API server. */
export interface RunningApiServer {
  /** http://HOST:PORT, or the socket path when it listens only on a unix socket. */
  readonly url: string;
  /** The unix socket, when it listens on one. */
  readonly socket?: string;
  /** The objects, to add, change and delete directly (as kubelet or an operator would). */
  readonly store: ObjectStore;
  /** Requests served so far, as `METHOD path` (no query; ` watch` appended for watches), for tests that check what a client did. */
  readonly requests: string[];
  /** Ends every open watch stream (clients resume from their last resourceVersion). */
  dropWatches(): void;
  /** Ends every watch and stops listening. */
  close(): Promise<void>;
}

/** Starts the server; resolves once it listens. */
export async function startApiServer(o: ApiServerOptions = {}): Promise<RunningApiServer> {
  const store = o.store ?? new ObjectStore(o.historyLimit);
  const requests: string[] = [];
  const endWatches = new Set<() => void>();
  const serve = (req: IncomingMessage, res: ServerResponse) => {
    void handle(req, res).catch((e: unknown) => {
      const err = e instanceof ApiError ? e : new ApiError(500, 'InternalError', e instanceof Error ? e.message : String(e));
      if (!res.headersSent) send(res, err.code, err.status());
      else res.end();
    });
  };
  const tcp = o.socket === undefined || o.host !== undefined || o.port !== undefined;
  const servers: Server[] = [];

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const method = req.method ?? 'GET';
    const isWatch = url.searchParams.get('watch') === '1' || url.searchParams.get('watch') === 'true';
    requests.push(`${method} ${url.pathname}${isWatch ? ' watch' : ''}`);
    if (o.token !== undefined && req.headers.authorization !== `Bearer ${o.token}`) {
      throw new ApiError(401, 'BadRequest', 'Unauthorized');
    }
    const route = parsePath(url.pathname);
    if (!route) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    if ('discovery' in route) {
      if (method !== 'GET') throw new ApiError(405, 'MethodNotAllowed', `${method} is not allowed on ${url.pathname}`);
      return send(res, 200, route.discovery);
    }
    const { type: t, namespace: ns, name, status } = route;
    const q = url.searchParams;
    if (name === undefined) {
      if (method === 'GET') {
        const sel: Selection = { type: t, namespace: ns, labelSelector: q.get('labelSelector') ?? undefined, fieldSelector: q.get('fieldSelector') ?? undefined };
        if (isWatch) return watch(req, res, sel, q);
        const rv = q.get('resourceVersion');
        if (rv && Number(rv) > store.resourceVersion) throw new ApiError(504, 'Timeout', `Too large resource version: ${rv}, current: ${store.resourceVersion}`);
        const list = store.list(sel);
        return send(res, 200, { kind: `${t.kind}List`, apiVersion: apiVersionOf(t), metadata: { resourceVersion: list.resourceVersion }, items: list.items });
      }
      if (method === 'POST') {
        if (!t.namespaced && ns !== undefined) throw badRequest('cluster-scoped resource');
        if (t.namespaced && ns === undefined) throw new ApiError(405, 'MethodNotAllowed', `POST needs a namespace for ${t.plural}`);
        return send(res, 201, store.create(t, ns, (await readBody(req)) as KubeObject));
      }
      throw new ApiError(405, 'MethodNotAllowed', `${method} is not supported on a collection here`);
    }
    switch (method) {
      case 'GET':
        return send(res, 200, store.get(t, ns, name));
      case 'PUT':
        return send(res, 200, store.update(t, ns, name, (await readBody(req)) as KubeObject, status));
      case 'PATCH':
        return send(res, 200, store.patch(t, ns, name, patchType(req.headers['content-type']), await readBody(req), status));
      case 'DELETE': {
        if (status) throw new ApiError(405, 'MethodNotAllowed', 'DELETE is not allowed on the status subresource');
        const body = (await readBody(req)) as { preconditions?: { resourceVersion?: string; uid?: string } } | undefined;
        return send(res, 200, store.delete(t, ns, name, body?.preconditions));
      }
      default:
        throw new ApiError(405, 'MethodNotAllowed', `${method} is not allowed`);
    }
  }

  function watch(req: IncomingMessage, res: ServerResponse, sel: Selection, q: URLSearchParams): void {
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked', 'cache-control': 'no-cache, private' });
    res.flushHeaders();
    let timer: NodeJS.Timeout | undefined;
    let unsubscribe: (() => void) | undefined;
    const end = () => {
      if (timer) clearTimeout(timer);
      unsubscribe?.();
      endWatches.delete(end);
      if (!res.writableEnded) res.end();
    };
    endWatches.add(end);
    req.on('close', end);
    res.on('close', end);
    unsubscribe = store.watch(sel, q.get('resourceVersion') ?? undefined, (e) => res.write(`${JSON.stringify(e)}\n`));
    if (!unsubscribe) return end();
    const secs = Number(q.get('timeoutSeconds'));
    if (secs > 0) timer = setTimeout(end, secs * 1000);
  }

  const listen = (bind: (s: Server, done: () => void) => void) =>
    new Promise<Server>((resolve, reject) => {
      const s = nodeHttp().createServer(serve);
      s.once('error', reject);
      bind(s, () => resolve(s));
    });
  const close = async () => {
    for (const end of [...endWatches]) end();
    for (const s of servers) {
      s.closeAllConnections();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
  };
  let url = o.socket ?? '';
  try {
    if (tcp) {
      const s = await listen((x, done) => x.listen(o.port ?? 0, o.host ?? '127.0.0.1', done));
      servers.push(s);
      const addr = s.address() as AddressInfo;
      url = `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
    }
    if (o.socket !== undefined) {
      const path = o.socket;
      await fs.rm(path, { force: true });
      servers.push(await listen((x, done) => x.listen(path, done)));
      await fs.chmod(path, 0o600);
    }
  } catch (e) {
    await close();
    throw e;
  }
  return {
    url,
    socket: o.socket,
    store,
    requests,
    dropWatches: () => {
      for (const end of [...endWatches]) end();
    },
    close,
  };
}

export { resourceByPlural };
