/**
 * The three PATCH bodies the API accepts
 * (https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/):
 * JSON patch (RFC 6902), JSON merge patch (RFC 7386), and strategic merge patch, which is a
 * merge patch where some lists merge element by element on a key (`patchMergeKey` in the API
 * reference) instead of being replaced: a node's `status.conditions` by `type`, for example.
 */
import { ApiError, badRequest } from './types';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonObject = { [k: string]: Json };

const isObject = (v: unknown): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);
const clone = <T>(v: T): T => structuredClone(v);

/** RFC 7386: objects merge recursively, null removes a key, anything else replaces. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return clone(patch);
  const out: JsonObject = isObject(target) ? clone(target) : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v) as Json;
  }
  return out;
}

/**
 * Lists that merge by key under a strategic merge patch, by their path (list elements as `*`),
 * as the API reference marks them (patchStrategy merge, patchMergeKey).
 */
const MERGE_KEYS: Record<string, string> = {
  'status.conditions': 'type',
  'status.addresses': 'type',
  'metadata.ownerReferences': 'uid',
  'spec.containers': 'name',
  'spec.initContainers': 'name',
  'spec.ephemeralContainers': 'name',
  'spec.volumes': 'name',
  'spec.containers.*.ports': 'containerPort',
  'spec.containers.*.env': 'name',
  'spec.initContainers.*.ports': 'containerPort',
  'spec.initContainers.*.env': 'name',
};
/** Lists of scalars merged as sets. */
const SET_LISTS = new Set(['metadata.finalizers']);

function strategicList(path: string, target: Json[] | undefined, patch: Json[]): Json[] {
  const key = MERGE_KEYS[path];
  if (SET_LISTS.has(path)) {
    const out = [...(target ?? [])];
    for (const v of patch) if (!out.includes(v)) out.push(v);
    return out;
  }
  if (!key) return clone(patch.filter((e) => !(isObject(e) && e.$patch !== undefined)));
  if (patch.some((e) => isObject(e) && e.$patch === 'replace')) return clone(patch.filter((e) => !(isObject(e) && e.$patch === 'replace')));
  const out = clone(target ?? []);
  for (const el of patch) {
    if (!isObject(el) || el[key] === undefined) throw badRequest(`strategic merge patch: an element of ${path} lacks its merge key "${key}"`);
    const at = out.findIndex((o) => isObject(o) && o[key] === el[key]);
    if (el.$patch === 'delete') {
      if (at >= 0) out.splice(at, 1);
      continue;
    }
    if (at >= 0) out[at] = strategicMerge(out[at], el, `${path}.*`) as Json;
    else out.push(strategicMerge(undefined, el, `${path}.*`) as Json);
  }
  return out;
}

/** Strategic merge patch: a merge patch whose keyed lists merge element by element. */
export function strategicMerge(target: unknown, patch: unknown, path = ''): unknown {
  if (!isObject(patch)) return clone(patch);
  if (patch.$patch === 'replace') {
    const rest = { ...patch };
    delete rest.$patch;
    return clone(rest);
  }
  const out: JsonObject = isObject(target) ? clone(target) : {};
  for (const [k, v] of Object.entries(patch)) {
    if (k.startsWith('$')) continue;
    const p = path ? `${path}.${k}` : k;
    if (v === null) delete out[k];
    else if (Array.isArray(v)) out[k] = strategicList(p, Array.isArray(out[k]) ? (out[k] as Json[]) : undefined, v);
    else out[k] = strategicMerge(out[k], v, p) as Json;
  }
  return out;
}

interface Op {
  op: string;
  path: string;
  from?: string;
  value?: Json;
}

/** RFC 6901 pointer to its unescaped parts. */
function pointer(p: string, field: string): string[] {
  if (p === '') return [];
  if (!p.startsWith('/')) throw badRequest(`json patch: ${field} "${p}" is not a JSON pointer`);
  return p
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function parentOf(doc: Json, parts: string[], p: string): { parent: JsonObject | Json[]; last: string } {
  let cur: Json = doc;
  for (const part of parts.slice(0, -1)) {
    const next: Json | undefined = Array.isArray(cur) ? cur[Number(part)] : isObject(cur) ? cur[part] : undefined;
    if (next === undefined || next === null || typeof next !== 'object') throw badRequest(`json patch: path "${p}" does not exist`);
    cur = next;
  }
  if (cur === null || typeof cur !== 'object') throw badRequest(`json patch: path "${p}" does not exist`);
  return { parent: cur, last: parts[parts.length - 1]! };
}

function get(doc: Json, p: string): Json {
  let cur: Json | undefined = doc;
  for (const part of pointer(p, 'path')) {
    cur = Array.isArray(cur) ? cur[Number(part)] : isObject(cur) ? cur[part] : undefined;
    if (cur === undefined) throw badRequest(`json patch: path "${p}" does not exist`);
  }
  return cur;
}

function remove(doc: Json, p: string): void {
  const { parent, last } = parentOf(doc, pointer(p, 'path'), p);
  if (Array.isArray(parent)) {
    const i = Number(last);
    if (!(i >= 0 && i < parent.length)) throw badRequest(`json patch: path "${p}" does not exist`);
    parent.splice(i, 1);
  } else {
    if (!(last in parent)) throw badRequest(`json patch: path "${p}" does not exist`);
    delete parent[last];
  }
}

function add(doc: Json, p: string, value: Json, replace: boolean): Json {
  const parts = pointer(p, 'path');
  if (parts.length === 0) return clone(value);
  const { parent, last } = parentOf(doc, parts, p);
  if (Array.isArray(parent)) {
    const i = last === '-' ? parent.length : Number(last);
    if (!(i >= 0 && i <= parent.length) || (replace && i === parent.length)) throw badRequest(`json patch: index in "${p}" is out of range`);
    if (replace) parent[i] = clone(value);
    else parent.splice(i, 0, clone(value));
  } else {
    if (replace && !(last in parent)) throw badRequest(`json patch: path "${p}" does not exist`);
    parent[last] = clone(value);
  }
  return doc;
}

/** RFC 6902, all six operations; the whole patch applies or none of it. */
export function jsonPatch(target: unknown, ops: unknown): unknown {
  if (!Array.isArray(ops)) throw badRequest('json patch: the body must be an array of operations');
  let doc = clone(target) as Json;
  ops.forEach((raw, i) => {
    const o = raw as Op;
    if (!isObject(raw) || typeof o.op !== 'string' || typeof o.path !== 'string') throw badRequest(`json patch: operation ${i} needs "op" and "path"`);
    switch (o.op) {
      case 'add':
        doc = add(doc, o.path, o.value ?? null, false);
        break;
      case 'replace':
        doc = add(doc, o.path, o.value ?? null, true);
        break;
      case 'remove':
        remove(doc, o.path);
        break;
      case 'move': {
        const v = get(doc, o.from ?? '');
        remove(doc, o.from ?? '');
        doc = add(doc, o.path, v, false);
        break;
      }
      case 'copy':
        doc = add(doc, o.path, get(doc, o.from ?? ''), false);
        break;
      case 'test':
        if (JSON.stringify(get(doc, o.path)) !== JSON.stringify(o.value)) throw new ApiError(422, 'Invalid', `json patch: test of "${o.path}" failed`);
        break;
      default:
        throw badRequest(`json patch: operation ${i}: unknown op "${o.op}"`);
    }
  });
  return doc;
}
