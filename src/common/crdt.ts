/**
 * The CRDT every gossip channel is built from: a map of versioned entries.
 *
 * Why it is this way: every piece of gossiped state has one writer (a peer writes its own
 * topology entry, the owner of a ring range writes its tokens), so "the higher version wins"
 * is all the merge needs. Equal versions with different values can only come from a fault (two
 * writers); they are settled by comparing the serialised values, so the merge stays
 * commutative, associative and idempotent whatever arrives in whatever order.
 */

/** An entry: `v` is its version, the rest is the value. */
export type Versioned<T> = T & { v: number };
export type MapData<T> = Record<string, Versioned<T>>;

/** JSON with object keys sorted, so equal values serialise alike whatever order their keys came in. */
export function canonical(x: unknown): string {
  if (x === null || typeof x !== 'object') return JSON.stringify(x) ?? 'null';
  if (Array.isArray(x)) return `[${x.map(canonical).join(',')}]`;
  const o = x as Record<string, unknown>;
  return `{${Object.keys(o)
    .filter((k) => o[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
    .join(',')}}`;
}

/** True when `a` should replace `b`. */
export function wins<T>(a: Versioned<T>, b: Versioned<T> | undefined): boolean {
  if (!b) return true;
  if (a.v !== b.v) return a.v > b.v;
  const sa = canonical(a);
  const sb = canonical(b);
  return sa !== sb && sa > sb;
}

export class VersionedMap<T> {
  private readonly entries = new Map<string, Versioned<T>>();

  get(key: string): Versioned<T> | undefined {
    return this.entries.get(key);
  }

  keys(): string[] {
    return [...this.entries.keys()];
  }

  values(): Versioned<T>[] {
    return [...this.entries.values()];
  }

  get size(): number {
    return this.entries.size;
  }

  /** Writes a local change with a version above any seen for the key (and above the clock, so it survives restarts). */
  set(key: string, value: T): Versioned<T> {
    const prev = this.entries.get(key);
    const v = Math.max((prev?.v ?? 0) + 1, Date.now());
    const e = { ...value, v } as Versioned<T>;
    this.entries.set(key, e);
    return e;
  }

  /** Writes an entry as given (for deterministic entries every peer computes alike). */
  put(key: string, e: Versioned<T>): void {
    this.entries.set(key, e);
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  /** Merges remote data; returns the entries that changed here (the delta to pass on), or undefined. */
  merge(data: MapData<T>): MapData<T> | undefined {
    let delta: MapData<T> | undefined;
    for (const [k, e] of Object.entries(data)) {
      if (wins(e, this.entries.get(k))) {
        this.entries.set(k, e);
        (delta ??= {})[k] = e;
      }
    }
    return delta;
  }

  toData(): MapData<T> {
    return Object.fromEntries(this.entries);
  }
}

/** Combines two deltas of one map (for batching): the winner of each key. */
export function combine<T>(a: MapData<T>, b: MapData<T>): MapData<T> {
  const out: MapData<T> = { ...a };
  for (const [k, e] of Object.entries(b)) if (wins(e, out[k])) out[k] = e;
  return out;
}
