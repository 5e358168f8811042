/**
 * Long-lived and captured child processes (the sandbox's routers, plugin invocations whose
 * stdout matters even on failure), through execa. Short fire-and-check commands use `run` in
 * `./exec.ts`, which stays free of execa so the plugin starts fast.
 *
 * A detached child gets its own session (setsid) and writes straight to a log file descriptor,
 * never through a pipe to this process: it outlives the process that started it.
 *
 * execa is ESM-only and loaded with `import()`, not a static import: under tsx (the test
 * runner) this package's .ts files are CommonJS, and tsx rewrites a required ESM package to
 * CommonJS, which then fails to resolve execa's import-only dependencies (unicorn-magic). The
 * webpackMode hint keeps ncc from splitting execa into a separate chunk file, which the single
 * executable could not load; the module is still evaluated only on first use.
 */
async function loadExeca(): Promise<typeof import('execa')> {
  return import(/* webpackMode: "eager" */ 'execa');
}
import { closeSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { run } from './exec';
import { noteStarted } from './spawn';

export interface DetachedOptions {
  /** Enter this network namespace first (a path such as /var/run/netns/x). */
  netns?: string;
  /** stdout and stderr are appended here. */
  logFile: string;
  env?: Record<string, string>;
}

const O_CLOEXEC = 0o2000000;

/**
 * Closes, in this process, descriptors above stderr that it inherited without close-on-exec
 * (a caller's pipes). libuv opens all of its own descriptors close-on-exec, so these are the
 * only ones a spawned child would inherit besides its stdio; a daemon holding a caller's pipe
 * keeps that caller waiting for end-of-file for as long as the daemon lives.
 */
function closeInheritedFds(): void {
  const ipc = Number(process.env.NODE_CHANNEL_FD ?? -1);
  let fds: string[];
  try {
    fds = readdirSync('/proc/self/fd');
  } catch {
    return;
  }
  for (const f of fds) {
    const fd = Number(f);
    if (!(fd > 2) || fd === ipc) continue;
    try {
      const flags = /flags:\s*([0-7]+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))?.[1];
      if (flags !== undefined && (parseInt(flags, 8) & O_CLOEXEC) === 0) closeSync(fd);
    } catch {
      /* gone meanwhile (the directory's own descriptor) */
    }
  }
}

/**
 * Starts `cmd args` in its own session, detached from this process, and returns its pid. With
 * `netns`, `nsenter --net` execs the command in place, so the pid is the command's own.
 */
export async function spawnDetached(cmd: string, args: readonly string[], opts: DetachedOptions): Promise<number> {
  const argv = opts.netns ? ['nsenter', `--net=${opts.netns}`, '--', cmd, ...args] : [cmd, ...args];
  const { execa } = await loadExeca();
  closeInheritedFds();
  const fd = openSync(opts.logFile, 'a', 0o600);
  try {
    // execa hands a lone integer straight to the kernel as the child's fd (its types only
    // spell out 3..9, any open descriptor works)
    const logFd = fd as 3;
    noteStarted(argv[0]!);
    const child = execa(argv[0]!, argv.slice(1), {
      detached: true,
      cleanup: false,
      stdin: 'ignore',
      stdout: logFd,
      stderr: logFd,
      buffer: false,
      reject: false,
      env: opts.env,
    });
    // the child may die at any time later; its end is observed through its pid, not this promise
    child.catch(() => undefined);
    const pid = child.pid;
    if (pid === undefined) {
      const r = await child;
      throw new Error(`${argv.join(' ')}: did not start${r.message ? `: ${r.message}` : ''}`);
    }
    child.unref();
    return pid;
  } finally {
    closeSync(fd);
  }
}

export interface Captured {
  exitCode: number | undefined;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** Set when the program could not be started at all. */
  failure?: string;
}

/**
 * Runs a program to completion and returns its exit code and both outputs whatever the
 * outcome (a CNI plugin reports its errors as JSON on stdout with a non-zero exit).
 */
export async function runCaptured(
  cmd: string,
  args: readonly string[],
  opts: { input?: string; env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<Captured> {
  const { execa } = await loadExeca();
  noteStarted(cmd);
  const r = await execa(cmd, args, {
    input: opts.input ?? '',
    env: opts.env,
    timeout: opts.timeoutMs ?? 30_000,
    killSignal: 'SIGKILL',
    reject: false,
    stripFinalNewline: false,
  });
  const failure = r.failed && r.exitCode === undefined && !r.timedOut ? r.shortMessage : undefined;
  return { exitCode: r.exitCode, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), timedOut: r.timedOut, failure };
}

/** The process's argv, or undefined when it is gone. */
export function processArgv(pid: number): string[] | undefined {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    const argv = raw.split('\0');
    if (argv[argv.length - 1] === '') argv.pop();
    return argv;
  } catch {
    return undefined;
  }
}

/** The parent's pid (field 4 of /proc/PID/stat), or undefined when the process is gone. */
export function parentPid(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return Number.isInteger(ppid) ? ppid : undefined;
  } catch {
    return undefined;
  }
}

/** True while the process exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    // field 3 of /proc/PID/stat, after the parenthesised command name
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function signal(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Waits until every pid has gone, or the deadline; returns the ones still alive. */
export async function waitGone(pids: readonly number[], timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  let left = pids.filter(isAlive);
  while (left.length > 0 && Date.now() < deadline) {
    await sleep(50);
    left = left.filter(isAlive);
  }
  return left;
}

export interface Termination {
  pid: number;
  /** How it ended: 'SIGTERM' when that was enough, 'SIGKILL' when it had to be killed, 'gone' when it was not running. */
  how: 'SIGTERM' | 'SIGKILL' | 'gone' | 'survived';
}

/** SIGTERM, then SIGKILL for whatever still runs after `graceMs`. */
export async function terminate(pids: readonly number[], graceMs = 5000): Promise<Termination[]> {
  const out = new Map<number, Termination['how']>();
  for (const pid of pids) out.set(pid, isAlive(pid) && signal(pid, 'SIGTERM') ? 'SIGTERM' : 'gone');
  const stubborn = await waitGone(pids.filter((p) => out.get(p) === 'SIGTERM'), graceMs);
  for (const pid of stubborn) {
    signal(pid, 'SIGKILL');
    out.set(pid, 'SIGKILL');
  }
  for (const pid of await waitGone(stubborn, 3000)) out.set(pid, 'survived');
  return [...out].map(([pid, how]) => ({ pid, how }));
}

/** Sends one signal (e.g. SIGKILL to simulate a crash) and waits up to `timeoutMs` for the exit. */
export async function killAndWait(pid: number, sig: NodeJS.Signals, timeoutMs = 5000): Promise<boolean> {
  if (!isAlive(pid)) return true;
  signal(pid, sig);
  return (await waitGone([pid], timeoutMs)).length === 0;
}

/** Pids of the processes inside a named network namespace (`ip netns pids`). */
export async function netnsPids(name: string): Promise<number[]> {
  try {
    const { stdout } = await run('ip', ['netns', 'pids', name], { timeoutMs: 10_000 });
    return stdout
      .split(/\s+/)
      .filter(Boolean)
      .map(Number)
      .filter((n) => Number.isInteger(n) && n > 0);
  } catch {
    return [];
  }
}
