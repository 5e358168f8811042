/**
 * The kernel's neighbour (ARP) table is one table for the whole machine: every namespace's
 * entries count against net.ipv4.neigh.default.gc_thresh1/2/3, which exist only in the
 * machine's own namespace (gc_thresh3, the hard limit, is 1024 by default). A sandbox of 32
 * hosts needs more than that (hosts reach each other on the underlay, routers probe each
 * other's bridges, pods reach pods), and past the limit the kernel refuses to send ("neighbor
 * table overflow", ENOBUFS). So the sandbox raises these limits, the one machine-wide setting
 * it changes, and puts them back on `down`.
 *
 * Several sandboxes may be up at once (test suites side by side). A registry,
 * /run/weft-sandbox/neigh.json, holds the values found before the first sandbox raised them
 * and each sandbox's need; the limits are the originals raised to cover the sum of the needs,
 * never lowered below the originals, and the last sandbox down restores the originals. Each
 * sandbox's state file records the originals too, so a `down` still restores them when the
 * registry is gone.
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { readIfExists, writeFileAtomic } from '../common/fsutil';
import { readSysctl, ensureSysctl } from '../sys/sysctl';
import { SANDBOX_ROOT } from './options';
import { sleep } from './pool';

export interface NeighValues {
  thresh1: number;
  thresh2: number;
  thresh3: number;
}

/** What `up` did to the limits. */
export interface NeighSizing {
  /** Entries this sandbox may need. */
  need: number;
  /** The limits before the first sandbox raised them (what the last `down` restores). */
  original: NeighValues;
  /** The limits just before this sandbox set them, and as it set them. */
  before: NeighValues;
  after: NeighValues;
}

interface Registry {
  original: NeighValues;
  holders: Record<string, number>;
}

export const NEIGH_REGISTRY = join(SANDBOX_ROOT, 'neigh.json');
const LOCK = join(SANDBOX_ROOT, 'neigh.lock');
const KEYS = { thresh1: 'net.ipv4.neigh.default.gc_thresh1', thresh2: 'net.ipv4.neigh.default.gc_thresh2', thresh3: 'net.ipv4.neigh.default.gc_thresh3' } as const;

/**
 * Entries a sandbox of `hosts` hosts with `pods` pods each may hold: each host one for every
 * other host on the underlay and one for every other host's bridge (the routers' data-path
 * probes); each pod one for every other pod (a full ping matrix), its gateway, and its host's
 * entry for it; and room for the machine's own use.
 */
export function neighNeed(hosts: number, pods: number): number {
  const p = hosts * pods;
  return 2 * hosts * (hosts - 1) + p * (p - 1) + 2 * p + 256;
}

/** Limits covering `need` on top of `original`: the soft limit at the need, the hard one twice that. */
export function limitsFor(original: NeighValues, need: number): NeighValues {
  return {
    thresh1: original.thresh1,
    thresh2: Math.max(original.thresh2, need),
    thresh3: Math.max(original.thresh3, 2 * need),
  };
}

export async function readNeighLimits(): Promise<NeighValues> {
  const n = async (k: string) => Number(await readSysctl(k));
  return { thresh1: await n(KEYS.thresh1), thresh2: await n(KEYS.thresh2), thresh3: await n(KEYS.thresh3) };
}

async function writeNeighLimits(v: NeighValues): Promise<void> {
  // raise the hard limit first and lower it last, so the soft one never exceeds it meanwhile
  const order: (keyof NeighValues)[] = v.thresh3 >= (await readNeighLimits()).thresh3 ? ['thresh3', 'thresh2', 'thresh1'] : ['thresh1', 'thresh2', 'thresh3'];
  for (const k of order) await ensureSysctl(KEYS[k], String(v[k]));
}

/** Runs `fn` holding the registry's lock (a directory; one left by a crash is taken after 30 s). */
async function locked<T>(fn: () => Promise<T>): Promise<T> {
  await fs.mkdir(SANDBOX_ROOT, { recursive: true, mode: 0o755 });
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      await fs.mkdir(LOCK);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const st = await fs.stat(LOCK).catch(() => undefined);
      if (st && Date.now() - st.mtimeMs > 30_000) await fs.rmdir(LOCK).catch(() => undefined);
      else if (Date.now() > deadline) throw new Error(`${LOCK} held for 30 s by another sandbox; remove it if none is running`);
      await sleep(50);
    }
  }
  try {
    return await fn();
  } finally {
    await fs.rmdir(LOCK).catch(() => undefined);
  }
}

async function readRegistry(): Promise<Registry | undefined> {
  const text = await readIfExists(NEIGH_REGISTRY);
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as Registry;
  } catch {
    return undefined;
  }
}

const sum = (r: Registry) => Object.values(r.holders).reduce((a, b) => a + b, 0);

/** Registers this sandbox's need and raises the machine's limits to cover every sandbox up. */
export function raiseNeighLimits(prefix: string, need: number): Promise<NeighSizing> {
  return locked(async () => {
    const before = await readNeighLimits();
    const reg = (await readRegistry()) ?? { original: before, holders: {} };
    reg.holders[prefix] = need;
    const after = limitsFor(reg.original, sum(reg));
    await writeFileAtomic(NEIGH_REGISTRY, JSON.stringify(reg, null, 2) + '\n', 0o644);
    await writeNeighLimits(after);
    return { need, original: reg.original, before, after };
  });
}

/**
 * Takes this sandbox's need back: the limits shrink to what the sandboxes still up need, and
 * return to the originals when none is left. `recorded` (from the state file) stands in for a
 * lost registry. Returns the limits set, or undefined when there was nothing to undo.
 */
export function releaseNeighLimits(prefix: string, recorded?: NeighValues): Promise<NeighValues | undefined> {
  return locked(async () => {
    const reg = await readRegistry();
    if (!reg) {
      if (!recorded) return undefined;
      await writeNeighLimits(recorded);
      return recorded;
    }
    if (!(prefix in reg.holders) && !recorded) return undefined;
    delete reg.holders[prefix];
    if (Object.keys(reg.holders).length === 0) {
      await writeNeighLimits(reg.original);
      await fs.rm(NEIGH_REGISTRY, { force: true });
      return reg.original;
    }
    const now = limitsFor(reg.original, sum(reg));
    await writeFileAtomic(NEIGH_REGISTRY, JSON.stringify(reg, null, 2) + '\n', 0o644);
    await writeNeighLimits(now);
    return now;
  });
}

export function formatNeigh(v: NeighValues): string {
  return `gc_thresh1 ${v.thresh1}, gc_thresh2 ${v.thresh2}, gc_thresh3 ${v.thresh3}`;
}
