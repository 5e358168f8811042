/**
 * The one door through which weft starts processes (commands, warm `ip` processes, kernel
 * monitors): each start is counted by command, so the router can say how many it started
 * (`processesStarted` in its report, `weft_processes_started_total` in its metrics). Starting a
 * process from a large Node process is one of its dearest acts (a fork copies its page tables),
 * so the count is worth watching.
 */
import { basename } from 'node:path';
import { nodeChildProcess } from '../common/lazy';

const started = new Map<string, number>();

/** Counts one start of `cmd` (for starts made through execa, `./process.ts`). */
export function noteStarted(cmd: string): void {
  const name = basename(cmd);
  started.set(name, (started.get(name) ?? 0) + 1);
}

/** `child_process.spawn`, counted under the command's base name. */
export const spawnCounted: typeof import('node:child_process').spawn = ((cmd: string, ...rest: unknown[]) => {
  noteStarted(cmd);
  return (nodeChildProcess().spawn as (...a: unknown[]) => unknown)(cmd, ...rest);
}) as typeof import('node:child_process').spawn;

/** Processes this process has started so far, by command (base name), largest first. */
export function processesStarted(): Record<string, number> {
  return Object.fromEntries([...started].sort((a, b) => b[1] - a[1]));
}
