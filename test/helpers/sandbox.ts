/** Shared by the end-to-end suites: sandboxes of their own, polling, address checks. */
import { readdirSync, readFileSync } from 'node:fs';
import { uid, sleep, WEFT, WEFT_NET } from './netns';
import { Sandbox, NETNS_DIR } from '../../src/sandbox';
import { contains, parseCidr, parseIPv4 } from '../../src/common/ip';

export const inRange = (addr: string | undefined, cidr: string) => {
  const c = parseCidr(cidr)!;
  const a = addr === undefined ? undefined : parseIPv4(addr);
  return a !== undefined && contains(c, a);
};

export function namespacesWith(prefix: string): string[] {
  try {
    return readdirSync(NETNS_DIR).filter((n) => n.startsWith(`${prefix}-`));
  } catch {
    return [];
  }
}

/** Pids whose command line mentions `needle` (the sandbox directory: routers of this sandbox). */
export function processesMentioning(needle: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    try {
      const cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8');
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      if (cmd.includes(needle) && stat[stat.lastIndexOf(')') + 2] !== 'Z') out.push(Number(d));
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

/** Polls `fn` until it returns true or the deadline passes; returns the last result. */
export async function eventually(fn: () => Promise<boolean>, deadlineMs: number, everyMs = 250): Promise<boolean> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    if (await fn()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(everyMs);
  }
}

export function newSandbox(tag: string): Sandbox {
  const prefix = `wse${tag}${uid().slice(0, 4)}`;
  return new Sandbox({ prefix });
}

export const upOpts = (hosts: number, pods: number) => ({ hosts, pods, weft: WEFT, plugin: WEFT_NET, deadlineMs: 30_000, matrix: false });

