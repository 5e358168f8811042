/**
 * The CRDT every gossip channel is built from: a map of versioned entries.
 *
 * Why it is this way: every piece of gossiped state has one writer (a peer writes its own
 * topology entry, the owner of a ring range writes its tokens), so "the higher version wins"
 * is all the merge needs. Equal versions with different values can only come from a fault (two
 * writers); they are settled by comparing the serialised values, so the merge stays
 * commutative, associative and idempotent whatever arrives in whatever order.
 */
import { MinHeap } from './heap';

/** An entry: `v` is its version, the rest is the value. */
export type Versioned<T> = T & { v: number };
export type MapData<T> = Record<string, Versioned<T>>;

/** JSON with object keys sorted, so equal values serialise alike whatever order their keys came in. */
export function canonical(x: unknown): string {
  if (x === null || typeof x !== 'object') return JSON.stringify(x) ?? 'null';
  if (Array.isArray(x)) {
    let s = '[';
    for (let i = 0; i < x.length; i++) s += (i ? ',' : '') + canonical(x[i]);
    return s + ']';
  }
  const o = x as Record<string, unknown>;
  const keys = Object.keys(o).sort();
  let s = '{';
  let first = true;
  for (const k of keys) {
    const v = o[k];
    if (v === undefined) continue;
    s += (first ? '' : ',') + JSON.stringify(k) + ':' + canonical(v);
    first = false;
  }
  return s + '}';
}

/**
 * Whether two JSON values are equal as `canonical` sees them (key order and keys holding
 * undefined do not count), without serialising either: a copy of an entry arriving again
 * (gossip brings most entries several times) is told from a conflict cheaply.
 */
export function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const y = b as unknown[];
    if (a.length !== y.length) return false;
    for (let i = 0; i < a.length; i++) if (!sameValue(a[i] === undefined ? null : a[i], y[i] === undefined ? null : y[i])) return false;
    return true;
  }
  const x = a as Record<string, unknown>;
  const y = b as Record<string, unknown>;
  let n = 0;
  for (const k in x) {
    if (!Object.hasOwn(x, k) || x[k] === undefined) continue;
    n++;
    if (!Object.hasOwn(y, k) || !sameValue(x[k], y[k])) return false;
  }
  for (const k in y) if (Object.hasOwn(y, k) && y[k] !== undefined) n--;
  return n === 0;
}

/** True when `a` should replace `b`. */
export function wins<T>(a: Versioned<T>, b: Versioned<T> | undefined): boolean {
  if (!b) return true;
  if (a.v !== b.v) return a.v > b.v;
  // the usual case at equal versions: the same entry again (only a fault makes two values)
  if (sameValue(a, b)) return false;
  const sa = canonical(a);
  const sb = canonical(b);
  return sa !== sb && sa > sb;
}

/** Buckets of a digest by default (see `VersionedMap.digest`), and the most a digest may have. */
export const BUCKETS = 64;
export const MAX_BUCKETS = 1024;

/** Whether a digest may have `n` buckets: a power of two from BUCKETS to MAX_BUCKETS (each folds into the coarser ones). */
export const validBuckets = (n: number): boolean => n >= BUCKETS && n <= MAX_BUCKETS && (n & (n - 1)) === 0;

/**
 * Buckets for a map of `size` keys: about 16 keys a bucket, within the limits. A bucket that
 * differs is answered whole, so a large state compared coarsely sends thousands of keys to
 * repair one (at 300 simulated peers, answers were 7 of a router's 12 MiB).
 */
export function bucketsFor(size: number): number {
  let b = BUCKETS;
  while (b < MAX_BUCKETS && b * 16 < size) b *= 2;
  return b;
}

/** 32-bit FNV-1a. */
export function fnv(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

export const bucketOf = (key: string, buckets = BUCKETS): number => fnv(key) % buckets;
/** The hash an entry adds to its bucket: of the key with the whole entry (value and version). */
export const entryHash = (key: string, e: unknown): number => fnv(`${key}#${canonical(e)}`);

/** Entries a map may take out of its digest (see VersionedMap): markers of deletion nobody needs sent any more. */
export interface QuietRule<T> {
  /** Whether the entry is a deletion marker (a tombstone). */
  tombstone(e: Versioned<T>): boolean;
  /** A tombstone whose version (a writer's clock in ms) is this much older than now goes quiet. */
  afterMs: number;
}

export class VersionedMap<T> {
  private readonly entries = new Map<string, Versioned<T>>();
  /** Per bucket of the finest digest (MAX_BUCKETS): the sum of the entries' hashes, and the keys in it (kept as entries change). */
  private readonly sums = new Array<number>(MAX_BUCKETS).fill(0);
  private readonly bucketKeys = new Map<number, Set<string>>();
  /** Each entry's hash, as added to its bucket (so replacing it need not hash the old entry again). */
  private readonly hashes = new Map<string, number>();
  /**
   * Tombstones still in the digest, each with the time it is queued under in `due`; and those
   * out of it (quiet).
   */
  private readonly loud = new Map<string, number>();
  private readonly quiet = new Set<string>();
  /**
   * Loud tombstones by when they go quiet, a key once while it stays loud: one rewritten keeps
   * its place and is queued again at its new time when that comes up early (`settle`). An
   * entry whose time is not its key's in `loud` is stale (the key stopped being loud) and is
   * dropped. So the heap holds about as many entries as there are loud tombstones, not one per
   * write.
   */
  private readonly due = new MinHeap<string>();

  /**
   * `quiet`: tombstones leave the digest, `inBuckets` and `toData` once old (the rule's
   * `afterMs`), and stay for merges, so an older copy of the entry still loses to them. Why: a
   * dropped connection is a tombstone that every router keeps; without this, a digest and a
   * newcomer's first answer carry every one ever made (more than half of the keys after a
   * large mesh forms and prunes). A router holding a stale copy past that time is answered by
   * whoever holds the quiet tombstone (`isQuiet`; see Topology.merge).
   */
  constructor(private readonly rule?: QuietRule<T>) {}

  /** Every write goes through here, so the digest never has to be computed from scratch. */
  private write(key: string, e: Versioned<T> | undefined): void {
    const b = bucketOf(key, MAX_BUCKETS);
    this.unhash(key, b);
    this.quiet.delete(key);
    const queuedAt = this.loud.get(key);
    this.loud.delete(key);
    if (!e) {
      this.entries.delete(key);
      return;
    }
    this.entries.set(key, e);
    if (this.rule?.tombstone(e)) {
      if (this.quietNow(e, Date.now())) {
        this.quiet.add(key);
        return;
      }
      if (queuedAt !== undefined) this.loud.set(key, queuedAt);
      else {
        const at = this.quietAt(e);
        this.loud.set(key, at);
        this.due.push(at, key);
      }
    }
    const h = entryHash(key, e);
    // kept as a signed 32-bit value, which V8 holds unboxed (an unsigned one over 2^31 is a
    // heap number per key); the sums are modulo 2^32, so subtracting either gives the same
    this.hashes.set(key, h | 0);
    this.sums[b] = (this.sums[b]! + h) >>> 0;
    let keys = this.bucketKeys.get(b);
    if (!keys) this.bucketKeys.set(b, (keys = new Set()));
    keys.add(key);
  }

  /** Takes `key`'s entry out of the digest (the entry itself stays). */
  private unhash(key: string, b = bucketOf(key, MAX_BUCKETS)): void {
    const prev = this.hashes.get(key);
    if (prev === undefined) return;
    this.sums[b] = (this.sums[b]! - prev) >>> 0;
    this.hashes.delete(key);
    const keys = this.bucketKeys.get(b);
    keys?.delete(key);
    if (keys?.size === 0) this.bucketKeys.delete(b);
  }

  /** When a tombstone leaves the digest: `afterMs` after its version (the writer's clock). */
  private quietAt(e: Versioned<T>): number {
    return e.v + this.rule!.afterMs;
  }

  private quietNow(e: Versioned<T>, now: number): boolean {
    return now > this.quietAt(e);
  }

  /**
   * Moves the tombstones that have grown old out of the digest (called before every read of
   * it): only those due, so a read costs nothing while none is (a forming mesh of 1,000 holds
   * thousands of loud tombstones and reads its digest on every new connection).
   */
  private settle(): void {
    const now = Date.now();
    while (this.due.peek() < now) {
      const at = this.due.peek();
      const k = this.due.pop()!;
      if (this.loud.get(k) !== at) continue;
      const e = this.entries.get(k)!;
      if (!this.quietNow(e, now)) {
        const later = this.quietAt(e);
        this.loud.set(k, later);
        this.due.push(later, k);
        continue;
      }
      this.unhash(k);
      this.loud.delete(k);
      this.quiet.add(k);
    }
  }

  /** Entries in the heap of due times (for tests). */
  get queuedTombstones(): number {
    return this.due.size;
  }

  /** Whether `key` holds a quiet tombstone: kept for merges, out of the digest. */
  isQuiet(key: string): boolean {
    return this.quiet.has(key);
  }

  /** Keys in the digest (quiet tombstones not counted). */
  get digestSize(): number {
    this.settle();
    return this.entries.size - this.quiet.size;
  }

  /**
   * Per bucket of keys (`buckets` of them, a valid count), the sum of the entries' hashes: two
   * maps with equal digests hold the same entries (up to hash collisions); where buckets
   * differ, `inBuckets` gives what to send.
   */
  digest(buckets = BUCKETS): number[] {
    this.settle();
    const out = new Array<number>(buckets).fill(0);
    for (let i = 0; i < MAX_BUCKETS; i++) if (this.sums[i]) out[i % buckets] = (out[i % buckets]! + this.sums[i]!) >>> 0;
    return out;
  }

  /** The entries in the given buckets of a digest of `of` buckets. */
  inBuckets(buckets: Iterable<number>, of = BUCKETS): MapData<T> {
    this.settle();
    const wanted = new Set(buckets);
    const out: MapData<T> = {};
    for (const [b, keys] of this.bucketKeys) if (wanted.has(b % of)) for (const k of keys) out[k] = this.entries.get(k)!;
    return out;
  }

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
    this.write(key, e);
    return e;
  }

  /** Writes an entry as given (for deterministic entries every peer computes alike). */
  put(key: string, e: Versioned<T>): void {
    this.write(key, e);
  }

  delete(key: string): void {
    this.write(key, undefined);
  }

  /** Merges remote data; returns the entries that changed here (the delta to pass on), or undefined. */
  merge(data: MapData<T>): MapData<T> | undefined {
    let delta: MapData<T> | undefined;
    for (const k in data) {
      if (!Object.hasOwn(data, k)) continue;
      const e = data[k]!;
      if (wins(e, this.entries.get(k))) {
        this.write(k, e);
        (delta ??= {})[k] = e;
      }
    }
    return delta;
  }

  /** The entries, quiet tombstones left out. */
  toData(): MapData<T> {
    this.settle();
    if (!this.quiet.size) return Object.fromEntries(this.entries);
    const out: MapData<T> = {};
    for (const [k, e] of this.entries) if (!this.quiet.has(k)) out[k] = e;
    return out;
  }
}

/** Combines two deltas of one map (for batching): the winner of each key. */
export function combine<T>(a: MapData<T>, b: MapData<T>): MapData<T> {
  return combineInto({ ...a }, b);
}

/** Adds delta `b` into `a` in place (the winner of each key); returns `a`. */
export function combineInto<T>(a: MapData<T>, b: MapData<T>): MapData<T> {
  for (const [k, e] of Object.entries(b)) if (wins(e, a[k])) a[k] = e;
  return a;
}
