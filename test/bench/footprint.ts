/**
 * What routers cost: CPU seconds and resident memory read from /proc, and the gossip counters
 * of their /metrics (fetched inside each host's namespace). No timing assertions here.
 */
import { readFileSync } from 'node:fs';
import type { Sandbox } from '../../src/sandbox';
import { sleep } from '../../src/sandbox/pool';
import { runInNetns } from './common';

const CLK_TCK = 100;

/** User + system CPU seconds of a process so far (NaN when it is gone). */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** Resident memory in MiB (VmRSS; NaN when the process is gone). */
export function rssMiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/**
 * Anonymous memory in MiB (smaps_rollup): the process's own heap and stacks, without the pages
 * of the executable it maps, which RSS counts in full in every process although the page cache
 * holds them once for all routers of the machine.
 */
export function anonMiB(pid: number): number {
  try {
    const m = /^Anonymous:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

export interface Idle {
  /** Per router: share of one core used over the window, in percent. */
  cpuPercent: number[];
  rssMiB: number[];
  anonMiB: number[];
  windowS: number;
}

/** CPU over `windowMs` of quiet and RSS at its end, per process. */
export async function idleFootprint(pids: number[], windowMs: number, signal?: AbortSignal): Promise<Idle> {
  const c0 = pids.map(cpuSeconds);
  const t0 = Date.now();
  await sleep(windowMs, signal);
  const dt = (Date.now() - t0) / 1000;
  return { cpuPercent: pids.map((p, i) => (100 * (cpuSeconds(p) - c0[i]!)) / dt), rssMiB: pids.map(rssMiB), anonMiB: pids.map(anonMiB), windowS: dt };
}

export interface Gossip {
  messagesOut: number;
  bytesOut: number;
}

/** Sums of weft_gossip_messages_total and weft_gossip_bytes_total sent, per router (NaN: no answer). */
export async function gossipSent(sb: Sandbox, metricsAddr = '127.0.0.1:6782'): Promise<Gossip[]> {
  const script = `fetch('http://${metricsAddr}/metrics').then(r => r.text()).then(t => process.stdout.write(t), e => { process.stderr.write(String(e)); process.exit(1); })`;
  return Promise.all(
    sb.hosts.map(async (h) => {
      const r = await runInNetns(h.netns, process.execPath, ['-e', script], 15_000);
      const sum = (re: RegExp) => r.stdout.split('\n').filter((l) => re.test(l)).reduce((a, l) => a + Number(l.split(' ').pop()), 0);
      if (r.code !== 0) return { messagesOut: NaN, bytesOut: NaN };
      return { messagesOut: sum(/^weft_gossip_messages_total\{.*direction="out"/), bytesOut: sum(/^weft_gossip_bytes_total\{.*direction="out"/) };
    }),
  );
}
