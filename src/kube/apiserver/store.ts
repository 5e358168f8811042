/**
 * The object store behind the test API server, with the API's concurrency semantics
 * (https://kubernetes.io/docs/reference/using-api/api-concepts/): one cluster-wide
 * resourceVersion counter bumped by every write; updates carrying a stale resourceVersion
 * fail with 409 Conflict; creates of an existing name with 409 AlreadyExists; watches resume
 * from a resourceVersion by replaying the event history, and a resourceVersion older than the
 * history answers 410 Expired (as an ERROR event); a watch with a label selector sees an
 * object that stops matching as DELETED and one that starts matching as ADDED.
 *
 * Simplifications, all on purpose: deletion is immediate (no finalizers or grace periods),
 * deleting a namespace deletes what is in it at once, and `limit`/`continue` are ignored
 * (every list is one page).
 */
import { randomUUID } from 'node:crypto';
import { jsonPatch, mergePatch, strategicMerge } from './patch';
import { fieldValue, matches, parseSelector, type Requirement } from './selector';
import {
  alreadyExists,
  apiVersionOf,
  badRequest,
  conflict,
  expired,
  INITIAL_NAMESPACES,
  invalid,
  notFound,
  resourceByPlural,
  ApiError,
  type ResourceType,
} from './types';
import type { KubeObject } from '../../common/kube-object';
import { byText } from '../../common/order';
import { isoTime } from '../../common/time';

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'ERROR';

/** One line of a watch stream. */
export interface WatchEvent {
  type: EventType;
  object: KubeObject;
}

/** What a list or a watch selects. */
export interface Selection {
  type: ResourceType;
  /** Only this namespace (namespaced types); undefined: all. */
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
}

interface Compiled {
  type: ResourceType;
  namespace?: string;
  labels: Requirement[];
  fields: Requirement[];
}

interface Change {
  rv: number;
  type: Exclude<EventType, 'ERROR'>;
  plural: string;
  object: KubeObject;
  /** The object before a MODIFIED change, to see it leave or enter a selection. */
  prev?: KubeObject;
}

export type PatchType = 'json' | 'merge' | 'strategic';

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

const keyOf = (plural: string, ns: string | undefined, name: string) => `${plural}/${ns ?? ''}/${name}`;

function compile(s: Selection): Compiled {
  return { type: s.type, namespace: s.namespace, labels: parseSelector(s.labelSelector ?? '', 'label'), fields: parseSelector(s.fieldSelector ?? '', 'field') };
}

function selects(c: Compiled, plural: string, o: KubeObject): boolean {
  if (plural !== c.type.plural) return false;
  if (c.namespace !== undefined && o.metadata.namespace !== c.namespace) return false;
  return matches(c.labels, (k) => o.metadata.labels?.[k]) && matches(c.fields, (k) => fieldValue(o, k));
}

export class ObjectStore {
  private rv = 0;
  private readonly objects = new Map<string, KubeObject>();
  private history: Change[] = [];
  /** A watch may resume from any resourceVersion >= this. */
  private oldest = 0;
  private readonly watchers = new Set<{ sel: Compiled; send: (e: WatchEvent) => void }>();

  /** @param historyLimit changes kept for watches to resume from */
  constructor(private readonly historyLimit = 10_000) {
    for (const name of INITIAL_NAMESPACES) this.create(resourceByPlural('namespaces')!, undefined, { metadata: { name } });
  }

  /** The current cluster-wide resourceVersion. */
  get resourceVersion(): number {
    return this.rv;
  }

  /** Forgets the change history: every watch from an earlier resourceVersion gets 410. */
  compact(): void {
    this.history = [];
    this.oldest = this.rv;
  }

  get(t: ResourceType, ns: string | undefined, name: string): KubeObject {
    const o = this.objects.get(keyOf(t.plural, this.nsFor(t, ns), name));
    if (!o) throw notFound(t, name);
    return structuredClone(o);
  }

  list(sel: Selection): { items: KubeObject[]; resourceVersion: string } {
    const c = compile(sel);
    const items = [...this.objects.entries()]
      .filter(([k, o]) => k.startsWith(`${sel.type.plural}/`) && selects(c, sel.type.plural, o))
      .map(([, o]) => structuredClone(o))
      .sort((a, b) => byText(`${a.metadata.namespace}/${a.metadata.name}`, `${b.metadata.namespace}/${b.metadata.name}`));
    return { items, resourceVersion: String(this.rv) };
  }

  create(t: ResourceType, ns: string | undefined, body: KubeObject): KubeObject {
    const obj = this.validated(t, ns, body);
    const meta = obj.metadata;
    if (!meta.name && meta.generateName) meta.name = `${meta.generateName}${randomUUID().slice(0, 5)}`;
    const name = meta.name;
    if (!name) throw invalid(t, '', 'metadata.name: Required value: name or generateName is required');
    if (!(t.plural === 'namespaces' ? DNS_LABEL : DNS_SUBDOMAIN).test(name)) throw invalid(t, name, `metadata.name: Invalid value: "${name}": a lowercase RFC 1123 name`);
    if (t.namespaced && !this.objects.has(keyOf('namespaces', undefined, meta.namespace!))) {
      throw notFound(resourceByPlural('namespaces')!, meta.namespace!);
    }
    const key = keyOf(t.plural, meta.namespace, name);
    if (this.objects.has(key)) throw alreadyExists(t, name);
    meta.uid = randomUUID();
    meta.creationTimestamp = isoTime().replace(/\.\d+Z$/, 'Z');
    delete meta.deletionTimestamp;
    return this.commit('ADDED', t, key, obj);
  }

  /** PUT: the whole object; `status` true for the /status subresource. */
  update(t: ResourceType, ns: string | undefined, name: string, body: KubeObject, status = false): KubeObject {
    const obj = this.validated(t, ns, body);
    if (obj.metadata.name !== undefined && obj.metadata.name !== name) throw badRequest(`the name of the object (${obj.metadata.name}) does not match the name on the URL (${name})`);
    const key = keyOf(t.plural, obj.metadata.namespace, name);
    const cur = this.objects.get(key);
    if (!cur) throw notFound(t, name);
    const asked = obj.metadata.resourceVersion;
    if (asked !== undefined && asked !== '' && asked !== cur.metadata.resourceVersion) throw conflict(t, name);
    return this.commit('MODIFIED', t, key, this.merged(t, cur, obj, status), cur);
  }

  /** PATCH of the given type; a resourceVersion in the patch is a precondition, as in the API. */
  patch(t: ResourceType, ns: string | undefined, name: string, type: PatchType, body: unknown, status = false): KubeObject {
    const key = keyOf(t.plural, this.nsFor(t, ns), name);
    const cur = this.objects.get(key);
    if (!cur) throw notFound(t, name);
    const next = (type === 'json' ? jsonPatch(cur, body) : type === 'merge' ? mergePatch(cur, body) : strategicMerge(cur, body)) as KubeObject;
    if (typeof next !== 'object' || next === null || typeof next.metadata !== 'object') throw badRequest('the patch leaves no object');
    const asked = next.metadata.resourceVersion;
    if (asked !== undefined && asked !== cur.metadata.resourceVersion) throw conflict(t, name);
    const obj = this.validated(t, ns, next);
    if (obj.metadata.name !== name) throw badRequest('a patch cannot change metadata.name');
    return this.commit('MODIFIED', t, key, this.merged(t, cur, obj, status), cur);
  }

  delete(t: ResourceType, ns: string | undefined, name: string, preconditions?: { resourceVersion?: string; uid?: string }): KubeObject {
    const key = keyOf(t.plural, this.nsFor(t, ns), name);
    const cur = this.objects.get(key);
    if (!cur) throw notFound(t, name);
    if (preconditions?.resourceVersion !== undefined && preconditions.resourceVersion !== cur.metadata.resourceVersion) throw conflict(t, name);
    if (preconditions?.uid !== undefined && preconditions.uid !== cur.metadata.uid) throw conflict(t, name);
    if (t.plural === 'namespaces') {
      for (const [k, o] of [...this.objects]) {
        if (o.metadata.namespace === name && !k.startsWith('namespaces/')) this.remove(resourceByPlural(k.split('/')[0]!)!, k, o);
      }
    }
    return this.remove(t, key, cur);
  }

  /**
   * Streams changes to `send` until the returned function is called. `from`: a resourceVersion
   * to resume after; undefined, '' or '0' start with an ADDED event per object that exists.
   * Returns undefined when the stream is over at once (a 410 sent as an ERROR event).
   */
  watch(sel: Selection, from: string | undefined, send: (e: WatchEvent) => void): (() => void) | undefined {
    const c = compile(sel);
    if (from === undefined || from === '' || from === '0') {
      for (const o of this.list(sel).items) send({ type: 'ADDED', object: o });
    } else {
      const n = Number(from);
      if (!Number.isInteger(n) || n < 0) throw badRequest(`resourceVersion "${from}" is not a resource version`);
      if (n < this.oldest) {
        send({ type: 'ERROR', object: expired(n, this.oldest).status() });
        return undefined;
      }
      for (const ch of this.history) if (ch.rv > n) this.deliver(c, ch, send);
    }
    const w = { sel: c, send };
    this.watchers.add(w);
    return () => this.watchers.delete(w);
  }

  private deliver(c: Compiled, ch: Change, send: (e: WatchEvent) => void): void {
    const now = selects(c, ch.plural, ch.object);
    if (ch.type !== 'MODIFIED') {
      if (now) send({ type: ch.type, object: structuredClone(ch.object) });
      return;
    }
    const before = ch.prev !== undefined && selects(c, ch.plural, ch.prev);
    if (now) send({ type: before ? 'MODIFIED' : 'ADDED', object: structuredClone(ch.object) });
    else if (before) send({ type: 'DELETED', object: structuredClone(ch.object) });
  }

  private nsFor(t: ResourceType, ns: string | undefined): string | undefined {
    return t.namespaced ? (ns ?? 'default') : undefined;
  }

  /** A copy of the body with kind, apiVersion and namespace checked and filled in. */
  private validated(t: ResourceType, ns: string | undefined, body: KubeObject): KubeObject {
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('the body must be a JSON object');
    const obj = structuredClone(body);
    if (typeof obj.metadata !== 'object' || obj.metadata === null) obj.metadata = {};
    if (obj.kind !== undefined && obj.kind !== t.kind) throw badRequest(`the body's kind ${String(obj.kind)} does not match the resource (${t.kind})`);
    if (obj.apiVersion !== undefined && obj.apiVersion !== apiVersionOf(t)) throw badRequest(`the body's apiVersion ${String(obj.apiVersion)} does not match the resource (${apiVersionOf(t)})`);
    obj.kind = t.kind;
    obj.apiVersion = apiVersionOf(t);
    const meta = obj.metadata;
    if (t.namespaced) {
      const want = ns ?? meta.namespace ?? 'default';
      if (meta.namespace !== undefined && meta.namespace !== want) throw badRequest(`the namespace of the object (${meta.namespace}) does not match the namespace on the request (${want})`);
      meta.namespace = want;
    } else delete meta.namespace;
    for (const f of ['labels', 'annotations'] as const) {
      const m = meta[f];
      if (m === undefined) continue;
      if (typeof m !== 'object' || m === null || Object.values(m).some((v) => typeof v !== 'string')) {
        throw invalid(t, meta.name ?? '', `metadata.${f}: Invalid value: values must be strings`);
      }
    }
    return obj;
  }

  /** What an update stores: identity fields kept; status only through /status and vice versa. */
  private merged(t: ResourceType, cur: KubeObject, next: KubeObject, status: boolean): KubeObject {
    let out: KubeObject;
    if (t.statusSubresource && status) out = { ...structuredClone(cur), status: next.status };
    else if (t.statusSubresource) out = { ...next, status: structuredClone(cur.status) };
    else out = next;
    if (out.status === undefined) delete out.status;
    out.metadata = { ...(status ? cur.metadata : out.metadata), uid: cur.metadata.uid, creationTimestamp: cur.metadata.creationTimestamp, name: cur.metadata.name };
    if (cur.metadata.namespace !== undefined) out.metadata.namespace = cur.metadata.namespace;
    return out;
  }

  private commit(type: 'ADDED' | 'MODIFIED', t: ResourceType, key: string, obj: KubeObject, prev?: KubeObject): KubeObject {
    obj.metadata.resourceVersion = String(++this.rv);
    this.objects.set(key, obj);
    this.record({ rv: this.rv, type, plural: t.plural, object: obj, prev });
    return structuredClone(obj);
  }

  private remove(t: ResourceType, key: string, cur: KubeObject): KubeObject {
    this.objects.delete(key);
    const gone = structuredClone(cur);
    gone.metadata.resourceVersion = String(++this.rv);
    this.record({ rv: this.rv, type: 'DELETED', plural: t.plural, object: gone });
    return structuredClone(gone);
  }

  private record(ch: Change): void {
    this.history.push(ch);
    if (this.history.length > this.historyLimit) this.oldest = this.history.shift()!.rv;
    for (const w of this.watchers) {
      try {
        this.deliver(w.sel, ch, w.send);
      } catch {
        this.watchers.delete(w);
      }
    }
  }
}

export { ApiError };
