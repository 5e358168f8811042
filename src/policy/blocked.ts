/**
 * Blocked connections, as the ruleset records them: each dropped packet's 5-tuple goes into a
 * set with a one-minute timeout (one set per direction, at most 1024 entries, so a flood costs
 * nothing more). Listing those sets now and then and logging the entries not seen before gives
 * a rate-limited log of blocked connections with their pods, without the kernel log (which a
 * network namespace other than the first does not get).
 */
import type { Logger } from '../common/log';
import type { Nft, NftJsonSet } from '../sys/nft';
import { BLOCKED_SETS, FAMILY, TABLE } from './ruleset';
import { isoTime } from '../common/time';

export type Direction = 'ingress' | 'egress';

/** One blocked connection attempt: its 5-tuple, and the pods at its ends when known. */
export interface BlockedConnection {
  direction: Direction;
  src: string;
  dst: string;
  /** 'tcp', 'udp', 'sctp', or the protocol number. */
  protocol: string;
  sport: number;
  dport: number;
  /** "namespace/name" of the source and destination pods, when they are known pods. */
  srcPod?: string;
  dstPod?: string;
  /** When weft first saw it (ISO time). */
  seen: string;
}

/** The 5-tuples in one of the blocked sets. */
export function parseBlocked(set: NftJsonSet | undefined): { src: string; dst: string; protocol: string; sport: number; dport: number }[] {
  const out = [];
  for (const e of set?.elem ?? []) {
    const val = (e as { elem?: { val?: unknown } }).elem?.val ?? e;
    const parts = (val as { concat?: unknown[] }).concat;
    if (!Array.isArray(parts) || parts.length !== 5) continue;
    const [src, dst, protocol, sport, dport] = parts;
    out.push({ src: String(src), dst: String(dst), protocol: String(protocol), sport: Number(sport), dport: Number(dport) });
  }
  return out;
}

export class BlockedLog {
  /** Tuples logged already, until they leave the kernel's set. */
  private readonly seen = new Map<string, BlockedConnection>();
  private recentList: BlockedConnection[] = [];

  constructor(
    private readonly nft: Nft,
    private readonly log: Logger,
    /** At most this many log lines per poll; the rest is summed up in one line. */
    private readonly burst: number,
  ) {}

  /** Lists both sets, logs what is new (at most `burst` lines), forgets what expired; returns what is new. */
  async poll(names: ReadonlyMap<string, string>): Promise<BlockedConnection[]> {
    const now = isoTime();
    const present = new Set<string>();
    const fresh: BlockedConnection[] = [];
    for (const direction of ['ingress', 'egress'] as const) {
      const set = await this.nft.listSet(FAMILY, TABLE, BLOCKED_SETS[direction]);
      for (const t of parseBlocked(set)) {
        const key = `${direction} ${t.src} ${t.dst} ${t.protocol} ${t.sport} ${t.dport}`;
        present.add(key);
        if (this.seen.has(key)) continue;
        const c: BlockedConnection = { direction, ...t, srcPod: names.get(t.src), dstPod: names.get(t.dst), seen: now };
        this.seen.set(key, c);
        fresh.push(c);
      }
    }
    for (const k of this.seen.keys()) if (!present.has(k)) this.seen.delete(k);
    for (const c of fresh.slice(0, this.burst)) {
      const pod = c.direction === 'ingress' ? c.dstPod : c.srcPod;
      this.log.warn(
        { direction: c.direction, pod, peer: c.direction === 'ingress' ? c.srcPod : c.dstPod, src: c.src, dst: c.dst, protocol: c.protocol, sport: c.sport, dport: c.dport },
        `network policy blocked ${c.protocol} ${c.src}:${c.sport} -> ${c.dst}:${c.dport} (${c.direction} of ${pod ?? 'a local pod'})`,
      );
    }
    if (fresh.length > this.burst) this.log.warn({ suppressed: fresh.length - this.burst }, `network policy blocked ${fresh.length - this.burst} more connections (not logged one by one)`);
    this.recentList = [...[...fresh].reverse(), ...this.recentList].slice(0, 20);
    return fresh;
  }

  /** The latest blocked connections, newest first (at most 20). */
  recent(): BlockedConnection[] {
    return this.recentList;
  }
}
