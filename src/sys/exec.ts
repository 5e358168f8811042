/**
 * The runner for short system commands (ip, bridge, iptables, nsenter, ...). Every call has a
 * deadline; a command that outlives it is killed and reported.
 *
 * This runner uses node:child_process rather than execa: the plugin starts a fresh process for
 * every CNI call, and loading execa adds ~17 ms to each start (measured in the single
 * executable, see README). Long-lived children (routers in the sandbox, benchmarks) go through
 * execa in `src/sys/process.ts`.
 */
import { dropShared, LINKS } from './shared-reads';
import { spawnCounted } from './spawn';
import { AddressNotFoundError, EntryNotFoundError, ExistsError, LinkNotFoundError, NetnsNotFoundError, SysError } from '../common/errors';

export interface RunOptions {
  /** Written to the command's stdin. */
  input?: string;
  /** Deadline in milliseconds (default 10 000). */
  timeoutMs?: number;
  /** Run inside this network namespace (a path such as /var/run/netns/x or /proc/PID/ns/net). */
  netns?: string;
  /** Environment additions. */
  env?: Record<string, string>;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

export const DEFAULT_TIMEOUT_MS = 10_000;

export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const argv = opts.netns ? ['nsenter', `--net=${opts.netns}`, '--', cmd, ...args] : [cmd, ...args];
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const shown = argv.join(' ');
  return new Promise((resolve, reject) => {
    const child = spawnCounted(argv[0]!, argv.slice(1), {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: opts.env ? { ...process.env, ...opts.env } : process.env,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new SysError(`${shown}: ${e.message}`));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      const stdout = Buffer.concat(out).toString();
      const stderr = Buffer.concat(err).toString();
      if (timedOut) reject(new SysError(`${shown}: no answer within ${timeoutMs} ms`, stderr, code));
      else if (code !== 0) reject(classify(`${shown}: ${firstLine(stderr) || `exit ${code}`}`, stderr, code, opts.netns));
      else resolve({ stdout, stderr });
    });
    child.stdin.on('error', () => {
      /* the command may exit before reading its input; the exit code tells */
    });
    child.stdin.end(opts.input ?? '');
  });
}

function firstLine(s: string): string {
  return s.trim().split('\n')[0] ?? '';
}

/** Runs `ip -batch -` with one command per line; stops at the first failing line. */
export async function ipBatch(lines: readonly string[], opts: RunOptions = {}): Promise<void> {
  if (lines.length === 0) return;
  await run('ip', ['-batch', '-'], { ...opts, input: lines.join('\n') + '\n' });
  dropShared(LINKS);
}

/** Runs `ip -json ARGS` and parses its output. */
export async function ipJson<T>(args: readonly string[], opts: RunOptions = {}): Promise<T> {
  const { stdout } = await run('ip', ['-json', ...args], opts);
  return (stdout.trim() ? JSON.parse(stdout) : []) as T;
}

/**
 * Types a failed command by what the tool said, once, here: callers test the class, never the
 * text. A namespace that cannot be entered or named, a device that does not exist, and an
 * object that exists already are the cases callers act on.
 */
export function classify(message: string, stderr: string, code: number | null, netns?: string): SysError {
  // nsenter's words, or ip -n's (src/sys/warm.ts)
  if (netns && /^(nsenter: (cannot open|reassociate to namespace)|Cannot open network namespace|setting the network namespace)/m.test(stderr)) {
    return new NetnsNotFoundError(`network namespace ${netns} does not exist or cannot be entered`, stderr, code);
  }
  const arg = /argument "([^"]*)" is wrong: Invalid "?netns"? value/.exec(stderr);
  if (arg) return new NetnsNotFoundError(`network namespace ${arg[1]} does not exist`, stderr, code);
  if (/Cannot find device|does not exist|No such device/.test(stderr)) return new LinkNotFoundError(message, stderr, code);
  if (/File exists|already exists/.test(stderr)) return new ExistsError(message, stderr, code);
  if (/Address not found|Cannot assign requested address/.test(stderr)) return new AddressNotFoundError(message, stderr, code);
  // a forwarding entry, route, nft table or set that is not there
  if (/No such file or directory/.test(stderr)) return new EntryNotFoundError(message, stderr, code);
  return new SysError(message, stderr, code);
}
