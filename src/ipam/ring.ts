/**
 * The IPAM ring: who owns which part of the allocation range.
 *
 * Why it is this way: the range is cut at tokens; a token at address `s` owned by peer P means
 * P owns from `s` up to the next token (the last token runs to the end of the range). Only the
 * owner of a stretch ever writes tokens inside it (when it gives space away), so the tokens
 * form a versioned map (crdt.ts) whose merge is a plain union with "higher version wins": two
 * peers can never write the same token concurrently, and no token is ever deleted. A stretch
 * changes owner only by its owner giving it away, or by `rmpeer` after its owner died; so two
 * peers can never both own an address, and neither can hand out the same address twice.
 *
 * Every ring also carries an epoch: the hash of the decision that created it. Rings from
 * different decisions (two clusters started apart, then joined) are never merged: that is
 * Weave's "seeded by different peers", reported instead of silently corrupting ownership.
 */
import { createHash } from 'node:crypto';
import { VersionedMap, type MapData, type Versioned } from '../common/crdt';
import { lastOf, type Cidr } from '../common/ip';

export interface Token {
  owner: string;
}

/** A contiguous stretch [first, last] of the range with its owner. */
export interface Span {
  first: number;
  last: number;
  owner: string;
}

/** What is gossiped and persisted: tokens under `t:<start>`, and the epoch under `epoch`. */
export type RingData = MapData<{ owner?: string; epoch?: string }>;

/** Splits [first, last] into the fewest aligned CIDR blocks. */
export function spanToCidrs(first: number, last: number): Cidr[] {
  const out: Cidr[] = [];
  let a = first;
  while (a <= last) {
    let size = a === 0 ? 2 ** 32 : 2 ** Math.min(32, countTrailingZeros(a));
    while (size > last - a + 1) size /= 2;
    out.push({ base: a, prefix: 32 - Math.log2(size) });
    a += size;
  }
  return out;
}

function countTrailingZeros(n: number): number {
  let c = 0;
  while (c < 32 && (n & (2 ** c)) === 0) c++;
  return c;
}

export class RingConflictError extends Error {}

export class Ring {
  private readonly tokens = new VersionedMap<Token>();
  private epoch: Versioned<{ epoch: string }> | undefined;
  /** `spans()` as of the last change of the tokens (read on every allocation, ring merge and space request; a sort of every token). */
  private spanCache: readonly Span[] | undefined;

  constructor(readonly range: Cidr) {}

  /** The token at `start`, as given; every change of the tokens goes through here, `setToken` or `merge`, so `spans()` is never stale. */
  private putToken(start: string, e: Versioned<Token>): void {
    this.tokens.put(start, e);
    this.spanCache = undefined;
  }

  /** The token at `start` for `owner`, at a version above the last. */
  private setToken(start: string, owner: string): Versioned<Token> {
    this.spanCache = undefined;
    return this.tokens.set(start, { owner });
  }

  initialised(): boolean {
    return this.tokens.get(String(this.range.base)) !== undefined;
  }

  /** Ownership in address order (computed once per change of the tokens). */
  spans(): readonly Span[] {
    if (this.spanCache) return this.spanCache;
    const starts = this.tokens
      .keys()
      .map(Number)
      .filter((s) => s >= this.range.base && s <= lastOf(this.range))
      .sort((a, b) => a - b);
    const out: Span[] = [];
    starts.forEach((s, i) => {
      const last = i + 1 < starts.length ? starts[i + 1]! - 1 : lastOf(this.range);
      const owner = this.tokens.get(String(s))!.owner;
      const prev = out[out.length - 1];
      // neighbouring stretches of one owner read as one
      if (prev && prev.owner === owner) prev.last = last;
      else out.push({ first: s, last, owner });
    });
    return (this.spanCache = out);
  }

  /** The aligned blocks `peer` owns. */
  ownedBy(peer: string): Cidr[] {
    return this.spans()
      .filter((s) => s.owner === peer)
      .flatMap((s) => spanToCidrs(s.first, s.last));
  }

  ownerOf(addr: number): string | undefined {
    let owner: string | undefined;
    for (const s of this.spans()) if (s.first <= addr) owner = s.owner;
    return owner;
  }

  /** Addresses each peer owns. */
  sizes(): Map<string, number> {
    const m = new Map<string, number>();
    for (const s of this.spans()) m.set(s.owner, (m.get(s.owner) ?? 0) + s.last - s.first + 1);
    return m;
  }

  /**
   * The ring every peer computes alike from the same decision (consensus value or seed list):
   * the range halved recursively among the members in name order. Versions are fixed so that
   * peers creating it independently produce identical entries.
   */
  initFrom(members: string[]): RingData {
    if (this.initialised()) return {};
    const sorted = [...new Set(members)].sort();
    const epoch = createHash('sha256').update(`${this.range.base}/${this.range.prefix}:${sorted.join(',')}`).digest('hex').slice(0, 16);
    const delta: RingData = {};
    const split = (first: number, size: number, ms: string[]) => {
      if (ms.length === 1 || size === 1) {
        const e = { owner: ms[0]!, v: 1 };
        this.putToken(String(first), e);
        delta[`t:${first}`] = e;
        return;
      }
      const half = Math.ceil(ms.length / 2);
      split(first, size / 2, ms.slice(0, half));
      split(first + size / 2, size / 2, ms.slice(half));
    };
    split(this.range.base, 2 ** (32 - this.range.prefix), sorted);
    this.epoch = { epoch, v: 1 };
    delta.epoch = this.epoch;
    return delta;
  }

  /**
   * Gives `block` (inside a stretch `from` owns) to `to`: a token at its start for `to`, and one
   * after its end for `from` when `from` keeps what follows.
   */
  give(from: string, to: string, block: Cidr): RingData {
    const spans = this.spans();
    const end = lastOf(block);
    const span = spans.find((s) => s.first <= block.base && s.last >= end);
    if (!span || span.owner !== from) throw new Error(`${from} does not own the whole of the block it was to give`);
    const delta: RingData = {};
    const setTok = (start: number, owner: string) => {
      const e = this.setToken(String(start), owner);
      delta[`t:${start}`] = e;
    };
    if (end < span.last) setTok(end + 1, from);
    setTok(block.base, to);
    // a stretch that reads as one may hold several tokens of `from` (space it got back by
    // rmpeer or a second gift); those inside the block move too, or `from` would keep them
    for (const k of this.tokens.keys()) {
      const start = Number(k);
      if (start > block.base && start <= end) setTok(start, to);
    }
    return delta;
  }

  /** Takes over every stretch `dead` owns (rmpeer): versions jump so the takeover wins merges. */
  takeOver(dead: string, to: string): RingData {
    const delta: RingData = {};
    // every token of the dead peer, not only the first of each stretch: a stretch that reads
    // as one may hold several of its tokens
    for (const key of this.tokens.keys()) {
      const prev = this.tokens.get(key)!;
      if (prev.owner !== dead) continue;
      const e = { owner: to, v: Math.max(prev.v + 100, Date.now()) };
      this.putToken(key, e);
      delta[`t:${key}`] = e;
    }
    return delta;
  }

  toData(): RingData {
    const out: RingData = {};
    for (const k of this.tokens.keys()) out[`t:${k}`] = this.tokens.get(k)!;
    if (this.epoch) out.epoch = this.epoch;
    return out;
  }

  /** Merges gossip; throws RingConflictError when it comes from a ring of another epoch. */
  merge(data: RingData): RingData | undefined {
    const theirEpoch = data.epoch?.epoch;
    const mine = this.epoch?.epoch;
    if (theirEpoch && mine && theirEpoch !== mine) {
      throw new RingConflictError(`IP allocation was seeded by different peers (ring epoch ${theirEpoch} here ${mine})`);
    }
    // tokens without their ring's epoch cannot be placed yet; the full state brings both
    if (!mine && !theirEpoch) return undefined;
    let delta: RingData | undefined;
    if (theirEpoch && !mine) {
      this.epoch = { epoch: theirEpoch, v: data.epoch!.v };
      (delta ??= {}).epoch = this.epoch;
    }
    const toks: MapData<Token> = {};
    for (const [k, e] of Object.entries(data)) {
      if (!k.startsWith('t:') || typeof e.owner !== 'string') continue;
      toks[k.slice(2)] = { owner: e.owner, v: e.v };
    }
    const d = this.tokens.merge(toks);
    if (d) this.spanCache = undefined;
    if (d) for (const [k, e] of Object.entries(d)) (delta ??= {})[`t:${k}`] = e;
    return delta;
  }
}

/**
 * The largest aligned block inside `owned` with no address in `used`, or undefined.
 * Recurses into halves only where something is used, so it costs O(|used| x 32).
 */
export function largestFreeBlock(owned: readonly Cidr[], used: readonly number[]): Cidr | undefined {
  const sorted = [...used].sort((a, b) => a - b);
  let best: Cidr | undefined;
  const countIn = (c: Cidr) => {
    const lo = lowerBound(sorted, c.base);
    return lowerBound(sorted, lastOf(c) + 1) - lo;
  };
  const visit = (c: Cidr) => {
    if (best && best.prefix <= c.prefix) return;
    if (countIn(c) === 0) {
      best = c;
      return;
    }
    if (c.prefix === 32) return;
    const half = 2 ** (32 - c.prefix - 1);
    // the upper half first: on a tie, give away the top and keep the low end in use
    visit({ base: c.base + half, prefix: c.prefix + 1 });
    visit({ base: c.base, prefix: c.prefix + 1 });
  };
  for (const c of [...owned].sort((a, b) => a.prefix - b.prefix)) visit(c);
  return best;
}

function lowerBound(a: number[], x: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (a[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
