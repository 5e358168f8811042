/**
 * The kernel VXLAN forwarding entries wanted for a set of peers, diffed against what the
 * device has: a pure function, unit-tested without a kernel.
 *
 * Why it is this way: entries outlive the router, so a starting router adopts what it finds
 * and removes nothing it cannot account for until a grace period has passed (a restart drops
 * no traffic). A peer that is listed but unreachable keeps its entries for the grace period
 * (a short partition or a restarting peer costs nothing); a peer that was listed and no longer
 * is (removed, or carried by another overlay now) loses them at once.
 */
import type { OverlayPeer } from './overlay';
import type { FdbEntry } from '../sys/vxlan';

export const ZERO_MAC = '00:00:00:00:00:00';

/** What the planner remembers between calls. */
export interface FdbMemory {
  /** When the planner first ran (entries found then are adopted for the grace period). */
  startedAt: number;
  /** Underlay addresses of peers listed at some call, with the peer's name. */
  listed: Map<string, string>;
  /** Since when a listed peer has been unreachable. */
  unreachableSince: Map<string, number>;
}

export function newFdbMemory(now: number): FdbMemory {
  return { startedAt: now, listed: new Map(), unreachableSince: new Map() };
}

/**
 * A listed peer is unreachable and within its grace: its entries fall due for removal with time
 * alone, so the caller should look again soon. (Entries adopted at start and never accounted
 * for fall due too, but they lead nowhere weft knows; removing them at a later pass costs
 * nothing.)
 */
export function fdbGraceRunning(mem: FdbMemory, now: number, graceMs: number): boolean {
  for (const since of mem.unreachableSince.values()) if (now - since <= graceMs) return true;
  return false;
}

export interface FdbPlan {
  /** `bridge -batch` lines. */
  lines: string[];
  added: number;
  removed: number;
}

/**
 * Plans the entries of device `dev` for `peers`. `owns(dst)` says which destinations this
 * overlay manages (another overlay may share the device's table with destinations of its own).
 * Updates `mem`.
 */
export function planFdb(
  dev: string,
  have: readonly FdbEntry[],
  peers: readonly OverlayPeer[],
  mem: FdbMemory,
  now: number,
  graceMs: number,
  owns: (dst: string) => boolean = () => true,
): FdbPlan {
  const want = new Map<string, OverlayPeer>();
  for (const p of peers) {
    if (p.reachable) mem.unreachableSince.delete(p.name);
    else if (!mem.unreachableSince.has(p.name)) mem.unreachableSince.set(p.name, now);
    const since = mem.unreachableSince.get(p.name);
    if (since === undefined || now - since <= graceMs) want.set(p.ip, p);
  }
  const listedNow = new Set(peers.map((p) => p.ip));
  const has = (mac: string, dst: string) => have.some((e) => e.mac === mac && e.dst === dst);
  const lines: string[] = [];
  let added = 0;
  for (const p of want.values()) {
    if (!has(ZERO_MAC, p.ip)) {
      lines.push(`fdb append ${ZERO_MAC} dev ${dev} dst ${p.ip} self permanent`);
      added++;
    }
    if (p.bridgeMac && !has(p.bridgeMac, p.ip)) {
      lines.push(`fdb replace ${p.bridgeMac} dev ${dev} dst ${p.ip} self permanent`);
      added++;
    }
  }
  let removed = 0;
  for (const e of have) {
    if (!e.dst || !owns(e.dst) || want.has(e.dst)) continue;
    const wasListed = mem.listed.has(e.dst);
    // listed now but past its grace, listed before and not now, or never accounted for and the grace since start is over
    const drop = listedNow.has(e.dst) || wasListed || now - mem.startedAt > graceMs;
    if (drop) {
      lines.push(`fdb del ${e.mac} dev ${dev} dst ${e.dst} self`);
      // the bridge learnt that MAC on this port too: forget it, or frames keep going to a device that no longer leads there
      if (e.mac !== ZERO_MAC) lines.push(`fdb del ${e.mac} dev ${dev} master`);
      removed++;
    }
  }
  for (const p of peers) mem.listed.set(p.ip, p.name);
  for (const ip of [...mem.listed.keys()]) if (!listedNow.has(ip)) mem.listed.delete(ip);
  for (const name of [...mem.unreachableSince.keys()]) if (!peers.some((p) => p.name === name)) mem.unreachableSince.delete(name);
  return { lines, added, removed };
}
