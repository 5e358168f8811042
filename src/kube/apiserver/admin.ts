/**
 * A minimal client for the test API server's unix socket, for the sandbox: create, change and
 * delete objects (Nodes of sandbox hosts, later the NetworkPolicy part's manifests) from the
 * machine's own namespace while the server's TCP address lives inside the sandbox's underlay
 * namespace. Plain JSON over HTTP with a deadline; a failure carries the API's Status message.
 */
import { KubeApiError } from '../../common/errors';
import { nodeHttp } from '../../common/lazy';
import { apiVersionOf, resourceByKind } from './types';
import type { KubeObject } from '../../common/kube-object';

export interface AdminTarget {
  /** The server's unix socket. */
  socket: string;
  /** Deadline per request (default 10 s). */
  timeoutMs?: number;
}

/**
 * One request; resolves with the parsed body of a 2xx answer, rejects with KubeApiError otherwise.
 * A connection of its own each time (no keep-alive agent): a reused idle connection the server
 * is closing at that moment fails with EPIPE, and a unix socket costs nothing to open.
 */
export function apiRequest(t: AdminTarget, method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<unknown> {
  const data = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = nodeHttp().request(
      { socketPath: t.socket, method, path, agent: false, headers: { accept: 'application/json', ...(data ? { 'content-type': contentType, 'content-length': Buffer.byteLength(data) } : {}) }, timeout: t.timeoutMs ?? 10_000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: { message?: string; reason?: string } | undefined;
          try {
            parsed = text ? JSON.parse(text) : undefined;
          } catch {
            parsed = undefined;
          }
          const code = res.statusCode ?? 0;
          if (code >= 200 && code < 300) resolve(parsed);
          else reject(new KubeApiError(`${method} ${path}: ${parsed?.message ?? `HTTP ${code}`}`, code, parsed?.reason));
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${t.timeoutMs ?? 10_000} ms`)));
    req.on('error', (e) => reject(new KubeApiError(`${method} ${path}: ${e.message}`)));
    if (data) req.write(data);
    req.end();
  });
}

/** The API path of an object (collection path when `withName` is false). */
export function pathOf(o: KubeObject, withName = true): string {
  const t = resourceByKind(o.kind ?? '');
  if (!t) throw new KubeApiError(`unknown kind ${String(o.kind)}`, 400);
  if (o.apiVersion !== undefined && o.apiVersion !== apiVersionOf(t)) throw new KubeApiError(`${o.kind}: apiVersion ${String(o.apiVersion)} is not served (want ${apiVersionOf(t)})`, 400);
  const base = t.group ? `/apis/${t.group}/${t.version}` : `/api/${t.version}`;
  const ns = t.namespaced ? `/namespaces/${encodeURIComponent(o.metadata.namespace ?? 'default')}` : '';
  return `${base}${ns}/${t.plural}${withName ? `/${encodeURIComponent(o.metadata.name ?? '')}` : ''}`;
}

/**
 * Creates the object, or replaces it when it exists (kubectl apply, without the three-way
 * merge); a given `status` is written too (through /status where the type has it, as a
 * kubelet updates its Node's addresses).
 */
export async function applyObject(t: AdminTarget, o: KubeObject): Promise<KubeObject> {
  try {
    return (await apiRequest(t, 'POST', pathOf(o, false), o)) as KubeObject;
  } catch (e) {
    if (!(e instanceof KubeApiError && e.code === 409)) throw e;
    const cur = (await apiRequest(t, 'GET', pathOf(o))) as KubeObject;
    let out = (await apiRequest(t, 'PUT', pathOf(o), { ...o, metadata: { ...o.metadata, resourceVersion: cur.metadata.resourceVersion } })) as KubeObject;
    if (o.status !== undefined && resourceByKind(o.kind ?? '')!.statusSubresource) {
      out = (await apiRequest(t, 'PUT', `${pathOf(o)}/status`, { ...out, status: o.status })) as KubeObject;
    }
    return out;
  }
}

/** Deletes the object; false when it was not there. */
export async function deleteObject(t: AdminTarget, o: KubeObject): Promise<boolean> {
  try {
    await apiRequest(t, 'DELETE', pathOf(o));
    return true;
  } catch (e) {
    if (e instanceof KubeApiError && e.code === 404) return false;
    throw e;
  }
}
