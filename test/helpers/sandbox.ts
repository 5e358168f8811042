/** Shared by the end-to-end suites: sandboxes of their own, polling, address checks. */
import { readdirSync } from 'node:fs';
import { uid, until, WEFT, WEFT_NET } from './netns';
export { processesMentioning } from './netns';
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


/** Polls `fn` until it returns true or the deadline passes (one implementation: `until`). */
export function eventually(fn: () => Promise<boolean>, deadlineMs: number, everyMs = 250): Promise<boolean> {
  return until(fn, deadlineMs, everyMs);
}

export function newSandbox(tag: string): Sandbox {
  const prefix = `wse${tag}${uid().slice(0, 4)}`;
  return new Sandbox({ prefix });
}

export const upOpts = (hosts: number, pods: number) => ({ hosts, pods, weft: WEFT, plugin: WEFT_NET, deadlineMs: 30_000, matrix: false });

