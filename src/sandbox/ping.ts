/** Pings between pods, one or the whole matrix, and the neighbour-table budget that bounds it. */
import { readFileSync } from 'node:fs';
import { SysError } from '../common/errors';
import { run } from '../sys/exec';
import { mapPool } from './pool';
import type { PingMatrix, SandboxPod } from './types';

/** Like ping, and tells whether the kernel refused to send (ENOBUFS: its neighbour table is full). */
export async function pingDetail(from: SandboxPod, to: SandboxPod | string, tries = 2): Promise<{ ok: boolean; noBufferSpace: boolean }> {
  const addr = typeof to === 'string' ? to : to.address;
  let noBufferSpace = false;
  if (!addr) return { ok: false, noBufferSpace };
  for (let k = 0; k < tries; k++) {
    try {
      await run('ping', ['-c1', '-W1', '-n', '-q', addr], { netns: from.netnsPath, timeoutMs: 5000 });
      return { ok: true, noBufferSpace: false };
    } catch (e) {
      // lost or unreachable; "No buffer space available" means the ARP table overflowed
      if (e instanceof SysError && /No buffer space available/.test(`${e.message}\n${e.stderr}`)) noBufferSpace = true;
    }
  }
  return { ok: false, noBufferSpace };
}

/**
 * Every pod pings every other pod, at most `concurrency` pings at a time.
 *
 * Each pinged pair costs two entries in the kernel's ARP table, and that table is shared by
 * every namespace on the machine (net.ipv4.neigh.default.gc_thresh3, 1024 by default, set
 * only in the machine's own namespace). Beyond `maxPairs` (default: half that limit) the
 * matrix is sampled: one pair for every ordered pair of hosts first, then random pairs.
 */
export async function pingMatrix(all: SandboxPod[], opts: { concurrency?: number; pods?: SandboxPod[]; maxPairs?: number } = {}): Promise<PingMatrix> {
  const t0 = Date.now();
  const pods = opts.pods ?? all;
  const ok: (boolean | null)[][] = pods.map(() => pods.map(() => null));
  const withAddr = pods.map((p, i) => (p.address ? i : -1)).filter((i) => i >= 0);
  const totalPairs = withAddr.length * (withAddr.length - 1);
  const maxPairs = opts.maxPairs ?? neighbourBudget();
  const pairs = totalPairs <= maxPairs ? allPairs(withAddr) : samplePairs(pods, withAddr, maxPairs);
  const holders = new Map<string, string[]>();
  for (const p of pods) if (p.address) holders.set(p.address, [...(holders.get(p.address) ?? []), p.name]);
  const duplicates = [...holders].filter(([, names]) => names.length > 1).map(([address, names]) => ({ address, pods: names }));
  const dup = new Set(duplicates.map((d) => d.address));
  let noBufferSpace = 0;
  await mapPool(pairs, opts.concurrency ?? 16, async ([i, j]) => {
    if (dup.has(pods[j]!.address!)) {
      ok[i]![j] = false;
      return;
    }
    const r = await pingDetail(pods[i]!, pods[j]!);
    ok[i]![j] = r.ok;
    if (r.noBufferSpace) noBufferSpace++;
  });
  const sameHost = { ok: 0, total: 0 };
  const crossHost = { ok: 0, total: 0 };
  for (const [i, j] of pairs) {
    const bucket = pods[i]!.host === pods[j]!.host ? sameHost : crossHost;
    bucket.total++;
    if (ok[i]![j]) bucket.ok++;
  }
  return { pods, ok, duplicates, sameHost, crossHost, pinged: pairs.length, totalPairs, noBufferSpace, ms: Date.now() - t0 };
}

/** Half of the kernel's ARP table limit, which every namespace on the machine shares. */
export function neighbourBudget(): number {
  return Math.floor(arpTableLimit() / 2);
}

/** net.ipv4.neigh.default.gc_thresh3 as this process sees it (1024 when unreadable). */
export function arpTableLimit(): number {
  try {
    const n = Number(readFileSync('/proc/sys/net/ipv4/neigh/default/gc_thresh3', 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : 1024;
  } catch {
    return 1024;
  }
}

function allPairs(idx: number[]): [number, number][] {
  const out: [number, number][] = [];
  for (const i of idx) for (const j of idx) if (i !== j) out.push([i, j]);
  return out;
}

/** Up to `max` ordered pairs: one per ordered pair of hosts (both ends varied), then random ones. */
function samplePairs(pods: SandboxPod[], idx: number[], max: number): [number, number][] {
  const byHost = new Map<number, number[]>();
  for (const i of idx) byHost.set(pods[i]!.host, [...(byHost.get(pods[i]!.host) ?? []), i]);
  const hosts = [...byHost.keys()].sort((a, b) => a - b);
  const seen = new Set<string>();
  const out: [number, number][] = [];
  const add = (i: number, j: number) => {
    const k = `${i}>${j}`;
    if (i === j || seen.has(k) || out.length >= max) return;
    seen.add(k);
    out.push([i, j]);
  };
  let turn = 0;
  for (const a of hosts) {
    for (const b of hosts) {
      const src = byHost.get(a)!;
      const dst = byHost.get(b)!;
      const i = src[turn % src.length]!;
      const j = dst[(turn + 1) % dst.length]!;
      add(i, j);
      turn++;
    }
  }
  for (let tries = 0; out.length < max && tries < max * 20; tries++) {
    add(idx[Math.floor(Math.random() * idx.length)]!, idx[Math.floor(Math.random() * idx.length)]!);
  }
  return out;
}
