/**
 * Label and field selectors as the API takes them in `?labelSelector=` and `?fieldSelector=`
 * (https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/): equality
 * (`a=b`, `a==b`, `a!=b`), sets (`a in (x,y)`, `a notin (x)`), existence (`a`, `!a`), joined
 * by commas, all of which must hold.
 */
import { badRequest } from './types';

export type Requirement =
  | { key: string; op: 'eq' | 'ne'; value: string }
  | { key: string; op: 'in' | 'notin'; values: string[] }
  | { key: string; op: 'exists' | 'absent' };

/** Splits on commas outside parentheses. */
function terms(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out.map((t) => t.trim()).filter(Boolean);
}

const KEY = /^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$/;

function key(k: string, what: string): string {
  if (!KEY.test(k)) throw badRequest(`unable to parse requirement: invalid ${what} key "${k}"`);
  return k;
}

/** Parses a selector; an empty one matches everything. Throws a 400 ApiError naming the bad part. */
export function parseSelector(s: string, what: 'label' | 'field' = 'label'): Requirement[] {
  return terms(s).map((t) => {
    let m = /^(\S+)\s+(in|notin)\s*\(([^)]*)\)$/.exec(t);
    if (m) {
      const values = m[3]!.split(',').map((v) => v.trim()).filter(Boolean);
      return { key: key(m[1]!, what), op: m[2] as 'in' | 'notin', values };
    }
    m = /^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$/.exec(t);
    if (m) return { key: key(m[1]!, what), op: m[2] === '!=' ? 'ne' : 'eq', value: m[3]! };
    m = /^(!?)\s*([^=!\s()]+)$/.exec(t);
    if (m && what === 'label') return { key: key(m[2]!, what), op: m[1] ? 'absent' : 'exists' };
    throw badRequest(`unable to parse requirement: "${t}" in ${what} selector "${s}"`);
  });
}

/** Whether values (labels, or fields by dotted path) satisfy every requirement. */
export function matches(reqs: readonly Requirement[], get: (key: string) => string | undefined): boolean {
  return reqs.every((r) => {
    const v = get(r.key);
    switch (r.op) {
      case 'eq':
        return v === r.value;
      case 'ne':
        return v !== r.value;
      case 'in':
        return v !== undefined && r.values.includes(v);
      case 'notin':
        return v === undefined || !r.values.includes(v);
      case 'exists':
        return v !== undefined;
      case 'absent':
        return v === undefined;
    }
  });
}

/** The value at a dotted path such as `metadata.name` or `spec.nodeName`, as a string. */
export function fieldValue(obj: unknown, path: string): string | undefined {
  let cur: unknown = obj;
  for (const part of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  if (cur === undefined || cur === null) return undefined;
  return typeof cur === 'object' ? JSON.stringify(cur) : String(cur);
}
