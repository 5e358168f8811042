/**
 * One timed process invocation, as a container runtime would make it: fixed env, config on
 * stdin, optionally inside a netns through nsenter. Wall time from just before spawn to just
 * after exit, with process.hrtime.bigint. Every run has a deadline (spawnSync timeout, SIGKILL).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { ROOT, type Netns } from '../helpers/netns';

export const TIME_BIN = '/usr/bin/time';

export interface Invocation {
  /** argv run with cwd = repo root, so relative paths such as dist/weft-net are exact. */
  argv: string[];
  env: Record<string, string>;
  stdin?: string;
  /** How the stdin is shown in the printed command line, e.g. `weft.conf.json`. */
  stdinName?: string;
  timeoutMs?: number;
}

export interface Timed {
  ms: number;
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  json: any;
  /** Set when the call failed (non-zero exit, timeout, spawn error). */
  error?: string;
}

export function timedRun(inv: Invocation): Timed {
  const [cmd, ...args] = inv.argv;
  const timeout = inv.timeoutMs ?? 30_000;
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd!, args, {
    cwd: ROOT,
    env: inv.env,
    input: inv.stdin ?? '',
    encoding: 'utf8',
    timeout,
    killSignal: 'SIGKILL',
    maxBuffer: 16 * 1024 * 1024,
  });
  const t1 = process.hrtime.bigint();
  const ms = Number(t1 - t0) / 1e6;
  let json: any;
  try {
    json = r.stdout?.trim() ? JSON.parse(r.stdout) : undefined;
  } catch {
    json = undefined;
  }
  let error: string | undefined;
  if (r.error) error = `${r.error.message}${(r.error as NodeJS.ErrnoException).code === 'ETIMEDOUT' ? ` (deadline ${timeout} ms)` : ''}`;
  else if (r.status !== 0) error = `exit ${r.status ?? r.signal}: ${(r.stdout || '').trim()} ${(r.stderr || '').trim()}`.trim();
  return { ms, code: r.status, signal: r.signal, stdout: r.stdout ?? '', stderr: r.stderr ?? '', json, error };
}

/** argv for running `plugin` inside `host` the way the fixtures do (nsenter into the host netns). */
export function inNetns(host: Netns | undefined, argv: string[]): string[] {
  return host ? ['nsenter', `--net=${host.path}`, '--', ...argv] : argv;
}

/**
 * Runs `inv` with GNU time wrapped right around the plugin (after nsenter), returning the peak
 * RSS in KiB that time reports (%M: the plugin's own maximum, or a waited-for child's if larger).
 */
export function timedRunWithRss(inv: Invocation, pluginIndex: number, outFile: string): Timed & { rssKiB?: number } {
  const argv = [...inv.argv.slice(0, pluginIndex), TIME_BIN, '-f', '%M', '-o', outFile, ...inv.argv.slice(pluginIndex)];
  const t = timedRun({ ...inv, argv });
  let rssKiB: number | undefined;
  try {
    const last = readFileSync(outFile, 'utf8').trim().split('\n').pop() ?? '';
    if (/^\d+$/.test(last)) rssKiB = Number(last);
  } catch {
    /* time did not write: leave undefined */
  }
  rmSync(outFile, { force: true });
  return { ...t, rssKiB };
}

const SHOWN_ENV = ['CNI_COMMAND', 'CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME', 'CNI_ARGS', 'CNI_PATH', 'WEFT_TRACE'];

/** The exact command line of an invocation, shell style: env assignments, argv, stdin redirect. */
export function commandLine(inv: Invocation): string {
  const q = (s: string) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
  const env = SHOWN_ENV.filter((k) => inv.env[k] !== undefined).map((k) => `${k}=${q(inv.env[k]!)}`);
  const parts = [...env, ...inv.argv.map(q)];
  if (inv.stdinName) parts.push(`< ${inv.stdinName}`);
  return parts.join(' ');
}
