/**
 * Manifests for the test API server: what `weft sandbox up --kube --manifests DIR`, `weft
 * sandbox apply FILE` and `weft sandbox delete FILE` load. Files are read as written (YAML
 * streams, JSON objects, lists, or `kind: List`), every object is checked for what the server
 * needs to place it (a served kind and apiVersion, a name), and applied through the server's
 * admin socket in an order that works: Namespaces first, then the rest as written; deleted in
 * the reverse order, Namespaces last.
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { loadAll } from 'js-yaml';
import { ConfigError, KubeApiError } from '../common/errors';
import { apiRequest, applyObject, pathOf, type AdminTarget } from './apiserver/admin';
import { apiVersionOf, resourceByKind } from './apiserver/types';
import type { MatrixSpec, MatrixProtocol } from '../policy/matrix-run';
import type { KubeObject } from '../common/kube-object';

/** One object and where it came from (`file#document`), for error messages. */
export interface ManifestObject {
  object: KubeObject;
  source: string;
}

const MANIFEST_EXT = /\.(ya?ml|json)$/i;

/** The objects of one file's text; `source` names it in errors. */
export function parseManifest(text: string, source: string): ManifestObject[] {
  let docs: unknown[];
  try {
    docs = source.toLowerCase().endsWith('.json') ? [JSON.parse(text)] : loadAll(text);
  } catch (e) {
    throw new ConfigError(source, `not valid ${source.toLowerCase().endsWith('.json') ? 'JSON' : 'YAML'}: ${(e as Error).message.split('\n')[0]}`);
  }
  const out: ManifestObject[] = [];
  docs.forEach((doc, i) => {
    const where = docs.length > 1 ? `${source}#${i + 1}` : source;
    const items = Array.isArray(doc) ? doc : (doc as KubeObject | null)?.kind === 'List' ? ((doc as { items?: unknown[] }).items ?? []) : doc == null ? [] : [doc];
    items.forEach((o, j) => {
      const at = items.length > 1 || Array.isArray(doc) ? `${where}[${j}]` : where;
      out.push({ object: checked(o, at), source: at });
    });
  });
  return out;
}

function checked(o: unknown, where: string): KubeObject {
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new ConfigError(where, 'is not an object');
  const k = o as KubeObject;
  if (typeof k.kind !== 'string') throw new ConfigError(`${where}: kind`, 'is required');
  const t = resourceByKind(k.kind);
  if (!t) throw new ConfigError(`${where}: kind`, `"${k.kind}" is not served by the test API server (Namespace, Pod, NetworkPolicy, ConfigMap, Secret, Lease, Node)`);
  if (k.apiVersion !== apiVersionOf(t)) throw new ConfigError(`${where}: apiVersion`, `must be ${apiVersionOf(t)} for ${k.kind}`);
  if (typeof k.metadata?.name !== 'string' || !k.metadata.name) throw new ConfigError(`${where}: metadata.name`, 'is required');
  return k;
}

/** The manifests of a file, or of every .yaml/.yml/.json file in a directory (in name order). */
export async function readManifests(path: string): Promise<ManifestObject[]> {
  let st;
  try {
    st = await fs.stat(path);
  } catch {
    throw new ConfigError(path, 'does not exist');
  }
  const files = st.isDirectory() ? (await fs.readdir(path)).filter((f) => MANIFEST_EXT.test(f)).sort().map((f) => join(path, f)) : [path];
  const out: ManifestObject[] = [];
  for (const f of files) out.push(...parseManifest(await fs.readFile(f, 'utf8'), f));
  return out;
}

const isNamespace = (m: ManifestObject) => m.object.kind === 'Namespace';

/** Creates or replaces every object (Namespaces first); returns them as the server stored them. */
export async function applyManifests(t: AdminTarget, objs: readonly ManifestObject[]): Promise<KubeObject[]> {
  const out: KubeObject[] = [];
  for (const m of [...objs.filter(isNamespace), ...objs.filter((x) => !isNamespace(x))]) {
    try {
      out.push(await applyObject(t, m.object));
    } catch (e) {
      throw new KubeApiError(`${m.source}: ${(e as Error).message}`, (e as KubeApiError).code, (e as KubeApiError).reason);
    }
  }
  return out;
}

/** Deletes every object (in reverse order, Namespaces last); returns how many were there. */
export async function deleteManifests(t: AdminTarget, objs: readonly ManifestObject[]): Promise<number> {
  let n = 0;
  for (const m of [...objs.filter((x) => !isNamespace(x)).reverse(), ...objs.filter(isNamespace).reverse()]) {
    try {
      await apiRequest(t, 'DELETE', pathOf(m.object));
      n++;
    } catch (e) {
      if (!(e instanceof KubeApiError && e.code === 404)) throw new KubeApiError(`${m.source}: ${e instanceof Error ? e.message : String(e)}`, (e as KubeApiError).code);
    }
  }
  return n;
}

/** The ports a sandbox pod serves: what its containers declare (TCP when no protocol is given), once each. */
export function servedPorts(pod: KubeObject): MatrixSpec[] {
  const containers = ((pod.spec as { containers?: { ports?: { containerPort?: number; protocol?: string }[] }[] } | undefined)?.containers ?? []);
  const seen = new Map<string, MatrixSpec>();
  for (const c of containers) {
    for (const p of c.ports ?? []) {
      if (typeof p.containerPort !== 'number') continue;
      const protocol = (p.protocol ?? 'TCP').toLowerCase() as MatrixProtocol;
      if (!['tcp', 'udp', 'sctp'].includes(protocol)) continue;
      seen.set(`${protocol}/${p.containerPort}`, { protocol, port: p.containerPort });
    }
  }
  return [...seen.values()];
}
