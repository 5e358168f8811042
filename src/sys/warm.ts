/**
 * `ip -batch` processes started ahead of need, for the router's per-pod netlink work.
 *
 * Why it is this way: starting a process from Node costs 2-4 ms of fork, exec and dynamic
 * linking before the command does anything (measured on the 2-core test machine: spawn of
 * /bin/true from a warm Node 24), which is more than the netlink work of a whole CNI ADD. So
 * the router keeps a few processes waiting on their stdin: `ip -batch -` for its own namespace,
 * and for a pod's namespace a shell that reads the namespace path as its first line and then
 * execs `ip -n` into it (POD_SHELL; the path is a shell variable, never interpreted). A
 * request writes its lines and closes stdin, so it pays for the netlink work and, in a pod,
 * one exec of ip; an ADD sends the path first (`enter`), so that exec runs while it makes the
 * pair. A used process exits; a new one is started shortly after, off
 * the request's path. When none is waiting (a burst), one is started on the spot, which costs
 * what a plain spawn costs. Idle processes use no CPU and exit with the router (their stdin
 * closes).
 */
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { spawnCounted } from './spawn';
import { EnvError, SysError } from '../common/errors';
import type { Startable } from '../common/lifecycle';
import { classify, DEFAULT_TIMEOUT_MS, type RunResult } from './exec';

export interface IpBatchOptions {
  /** Run inside this network namespace (a path: /var/run/netns/x or /proc/PID/ns/net). */
  netns?: string;
  /** `ip -json`: one JSON array per line of output, one line per command. */
  json?: boolean;
  /** Deadline in milliseconds (default 10 000). */
  timeoutMs?: number;
}

/** What the output of a batch was, whatever its exit code. */
export interface RawResult extends RunResult {
  code: number | null;
  timedOut: boolean;
}

/** Runs `ip [-json] -batch -` with one command per line; stops at the first failing line. */
export interface IpRunner {
  /** Resolves on success; a failure is the typed error `classify` makes of ip's stderr. */
  batch(lines: readonly string[], opts?: IpBatchOptions): Promise<RunResult>;
  /** Resolves with the output whatever the exit code (for reads where a later line may fail). */
  batchRaw(lines: readonly string[], opts?: IpBatchOptions): Promise<RawResult>;
  /**
   * A batch in `opts.netns` whose process enters the namespace now and gets its lines later,
   * so the entering (an exec of ip) overlaps the caller's other work.
   * Exactly one of `batch` or `cancel` must follow; the deadline counts from `batch`.
   */
  enter(opts: IpBatchOptions & { netns: string }): EnteredBatch;
}

/** A batch whose process is entering or has entered its namespace (IpRunner.enter). */
export interface EnteredBatch {
  /** As IpRunner.batch, in the namespace entered. */
  batch(lines: readonly string[]): Promise<RunResult>;
  /** Lets the process go without running anything. */
  cancel(): void;
}

export interface WarmIpOptions {
  /** Processes kept waiting per kind (host/pod, plain/json) once the kind has been used; default 1. */
  size?: number;
  /** Delay before used processes are replaced, so a replacement never competes with the request it served; default 20 ms. */
  refillDelayMs?: number;
}

interface Kind {
  key: string;
  pod: boolean;
  json: boolean;
}

interface Proc {
  child: ChildProcessWithoutNullStreams;
  out: Buffer[];
  err: Buffer[];
  exited: Promise<number | null>;
  dead: boolean;
}

/**
 * The shell that waits in a pod's place: first line of stdin is the namespace path. `ip -n`
 * enters it by itself, one exec fewer than nsenter then ip (0.7 ms of ~2 ms, measured with
 * farm-bench); it takes a name under /var/run/netns, so an absolute path is given as one
 * relative to that directory. Without the directory, or for a relative path, nsenter does it.
 */
const POD_SHELL =
  'IFS= read -r ns && case $ns in /*) [ -d /var/run/netns ] && exec ip -n "../../..$ns" "$@" -batch - ;; esac; exec nsenter --net="$ns" -- ip "$@" -batch -';

function kindOf(opts: IpBatchOptions): Kind {
  const pod = opts.netns !== undefined;
  const json = opts.json === true;
  return { key: `${pod ? 'pod' : 'host'}/${json ? 'json' : 'plain'}`, pod, json };
}

function argvOf(k: Kind): string[] {
  const flags = k.json ? ['-json'] : [];
  return k.pod ? ['sh', '-c', POD_SHELL, 'sh', ...flags] : ['ip', ...flags, '-batch', '-'];
}

function shownOf(k: Kind, netns: string | undefined): string {
  const ip = `ip${k.json ? ' -json' : ''} -batch -`;
  return netns ? `${ip} in ${netns}` : ip;
}

/** A batch's result as `batch` gives it: the output, or the typed error its failure means. */
function checked(r: RawResult, opts: IpBatchOptions): RunResult {
  if (!r.timedOut && r.code === 0) return { stdout: r.stdout, stderr: r.stderr };
  const shown = shownOf(kindOf(opts), opts.netns);
  if (r.timedOut) throw new SysError(`${shown}: no answer within ${opts.timeoutMs ?? DEFAULT_TIMEOUT_MS} ms`, r.stderr, r.code);
  const first = r.stderr.trim().split('\n')[0] || `exit ${r.code}`;
  throw classify(`${shown}: ${first}`, r.stderr, r.code, opts.netns);
}

export class WarmIp implements IpRunner, Startable {
  private readonly idle = new Map<string, Proc[]>();
  /** Processes taken for a batch whose lines have not all been sent (entered ones wait here). */
  private readonly taken = new Set<Proc>();
  private readonly kinds = new Map<string, Kind>();
  private refillTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly size: number;
  private readonly refillDelayMs: number;

  constructor(o: WarmIpOptions = {}) {
    this.size = o.size ?? 1;
    this.refillDelayMs = o.refillDelayMs ?? 20;
  }

  /**
   * Starts the waiting processes ADD and DEL use (host and pod, plain); the JSON kinds (CHECK)
   * start waiting after their first use. Every process is a fork of the router, so a router
   * that starts among many (a sandbox of 32) starts few.
   */
  async start(): Promise<void> {
    this.stopped = false;
    for (const opts of [{}, { netns: '' }]) {
      const k = kindOf(opts);
      this.kinds.set(k.key, k);
    }
    this.refill();
  }

  /** Lets the waiting processes go, entered ones too (their stdin closes, they exit without doing anything). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.refillTimer);
    const all = [...this.idle.values()].flat().concat([...this.taken]);
    this.idle.clear();
    this.taken.clear();
    for (const p of all) p.child.stdin.end();
    await Promise.all(all.map((p) => Promise.race([p.exited, new Promise((r) => setTimeout(r, 1000).unref())])));
    for (const p of all) if (!p.dead) p.child.kill('SIGKILL');
  }

  async batch(lines: readonly string[], opts: IpBatchOptions = {}): Promise<RunResult> {
    return checked(await this.batchRaw(lines, opts), opts);
  }

  async batchRaw(lines: readonly string[], opts: IpBatchOptions = {}): Promise<RawResult> {
    return this.open(opts)(lines);
  }

  enter(opts: IpBatchOptions & { netns: string }): EnteredBatch {
    let run: ((lines: readonly string[]) => Promise<RawResult>) | undefined = this.open(opts);
    const once = () => {
      const r = run;
      run = undefined;
      if (!r) throw new Error('an entered batch runs once');
      return r;
    };
    return {
      batch: async (lines) => checked(await once()(lines), opts),
      cancel: () => void once()([]).catch(() => undefined),
    };
  }

  /**
   * Takes a process and, in a pod's namespace, sends it the path at once; the returned function
   * sends the lines, closes stdin and collects the output (no lines: the process exits idle).
   */
  private open(opts: IpBatchOptions): (lines: readonly string[]) => Promise<RawResult> {
    if (opts.netns !== undefined && (opts.netns === '' || /[\n\0]/.test(opts.netns))) {
      throw new EnvError('CNI_NETNS', `"${opts.netns}" is not a usable namespace path`);
    }
    const k = kindOf(opts);
    this.kinds.set(k.key, k);
    const p = this.take(k);
    this.taken.add(p);
    if (k.pod) p.child.stdin.write(`${opts.netns}\n`);
    return async (lines) => {
      this.taken.delete(p);
      const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        p.child.kill('SIGKILL');
      }, timeoutMs);
      try {
        p.child.stdin.end(lines.length ? lines.join('\n') + '\n' : undefined);
        const code = await p.exited;
        return { stdout: Buffer.concat(p.out).toString(), stderr: Buffer.concat(p.err).toString(), code, timedOut };
      } finally {
        clearTimeout(timer);
        this.scheduleRefill();
      }
    };
  }

  /** A waiting process of this kind, or a new one when none waits. */
  private take(k: Kind): Proc {
    const list = this.idle.get(k.key) ?? [];
    let p: Proc | undefined;
    while ((p = list.shift()) && p.dead) {
      /* exited while waiting: skip */
    }
    return p ?? this.spawn(k);
  }

  private spawn(k: Kind): Proc {
    const [cmd, ...args] = argvOf(k);
    const child = spawnCounted(cmd!, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const p: Proc = { child, out: [], err: [], exited: undefined as unknown as Promise<number | null>, dead: false };
    p.exited = new Promise((resolve) => {
      child.on('error', (e) => {
        p.err.push(Buffer.from(`${cmd}: ${e.message}\n`));
        p.dead = true;
        resolve(null);
      });
      child.on('close', (code) => {
        p.dead = true;
        resolve(code);
      });
    });
    child.stdout.on('data', (d: Buffer) => p.out.push(d));
    child.stderr.on('data', (d: Buffer) => p.err.push(d));
    child.stdin.on('error', () => {
      /* the process may exit before reading its input; its exit code tells */
    });
    return p;
  }

  private scheduleRefill(): void {
    if (this.stopped || this.refillTimer) return;
    this.refillTimer = setTimeout(() => {
      this.refillTimer = undefined;
      this.refill();
    }, this.refillDelayMs);
    this.refillTimer.unref();
  }

  private refill(): void {
    if (this.stopped) return;
    for (const k of this.kinds.values()) {
      const list = (this.idle.get(k.key) ?? []).filter((p) => !p.dead);
      while (list.length < this.size) list.push(this.spawn(k));
      this.idle.set(k.key, list);
    }
  }

  /** Pids of the processes waiting now. */
  waitingPids(): number[] {
    return [...this.idle.values()].flat().filter((p) => !p.dead && p.child.pid !== undefined).map((p) => p.child.pid!);
  }

  /** Processes waiting now, by kind (for tests and the report). */
  waiting(): Record<string, number> {
    return Object.fromEntries([...this.idle].map(([key, l]) => [key, l.filter((p) => !p.dead).length]));
  }
}
