/**
 * The kernel's own change reports for the router's namespace: links, addresses and routes
 * (`ip -o monitor`), the forwarding entries weft programs on its VXLAN devices (`bridge
 * monitor fdb`) and, with iptables on nf_tables, rules (`nft monitor`).
 *
 * Why it is this way: the router's repair and reprogramming passes are level-triggered and
 * read the kernel through short-lived processes; polling every few seconds is what an idle
 * router spent most of its CPU on. Three processes waiting on netlink cost nothing while
 * nothing changes and report a change within milliseconds, so the passes can run when told
 * (src/common/pacer.ts). A monitor that is missing or exits is restarted with a growing delay;
 * until every one runs, `watching` is false and callers poll as before. Each runs under
 * `setpriv --pdeathsig TERM` (util-linux): a monitor reads no input and would otherwise outlive
 * a router killed with -9, and keep its namespace alive.
 */
import type { ChildProcess } from 'node:child_process';
import { spawnCounted } from './spawn';
import type { Startable } from '../common/lifecycle';
import type { Logger } from '../common/log';

/** The line of the change reported when a monitor (re)starts: what it missed before is unknown. */
export const MONITOR_STARTED = '(monitor started)';
/** The line of the change reported when a running monitor ends: changes go unreported until it is back. */
export const MONITOR_ENDED = '(monitor ended)';

/** One reported change: which monitor saw it, and its line (or MONITOR_STARTED / MONITOR_ENDED). */
export interface KernelChange {
  source: 'ip' | 'bridge' | 'nft';
  line: string;
}

export interface KernelWatchOptions {
  /** Watch nf_tables rules too (iptables-nft is the backend in use). */
  rules: boolean;
  /** Only forwarding entries of these devices are reported (the overlays' own; the bridge's learning is not a change to weft). */
  fdbDevices: readonly string[];
  /** First restart delay of a monitor that exited; doubles up to 30 s (default 1 s). */
  restartMs?: number;
}

interface Monitor {
  source: KernelChange['source'];
  argv: string[];
  /** Whether a line is a change weft cares about. */
  keep: (line: string) => boolean;
  child?: ChildProcess;
  running: boolean;
  delayMs: number;
  timer?: NodeJS.Timeout;
}

const MAX_RESTART_MS = 30_000;

/** `nft monitor` lines about rules, chains and tables; not set elements (policy's own churn) nor its `# new generation` notes. */
export function nftLineMatters(line: string): boolean {
  return /^(add|delete|create|replace|destroy) (rule|chain|table) /.test(line);
}

/** `bridge monitor fdb` lines of one of `devices`, entries of the device itself (not what the bridge learnt). */
export function fdbLineMatters(line: string, devices: readonly string[]): boolean {
  const dev = /\bdev (\S+)/.exec(line)?.[1];
  return dev !== undefined && devices.includes(dev) && /\bself\b|\bdst\b/.test(line);
}

export class KernelWatch implements Startable {
  private readonly monitors: Monitor[];
  private readonly listeners: ((c: KernelChange) => void)[] = [];
  private stopped = true;
  /** The first restart delay, and the one a monitor returns to once it runs again. */
  private readonly firstRestartMs: number;

  constructor(
    private readonly c: { log: Logger },
    o: KernelWatchOptions,
  ) {
    this.firstRestartMs = o.restartMs ?? 1000;
    const mk = (source: Monitor['source'], argv: string[], keep: Monitor['keep']): Monitor => ({ source, argv: ['setpriv', '--pdeathsig', 'TERM', '--', ...argv], keep, running: false, delayMs: this.firstRestartMs });
    this.monitors = [
      mk('ip', ['ip', '-o', 'monitor', 'link', 'address', 'route'], (l) => l.trim() !== ''),
      mk('bridge', ['bridge', 'monitor', 'fdb'], (l) => fdbLineMatters(l, o.fdbDevices)),
      ...(o.rules ? [mk('nft', ['nft', 'monitor'], nftLineMatters)] : []),
    ];
  }

  /** Called for every change that matters, and once each time a monitor (re)starts or stops (what it missed meanwhile is unknown). */
  onChange(fn: (c: KernelChange) => void): void {
    this.listeners.push(fn);
  }

  /** Every monitor is running: a change would be reported. */
  get watching(): boolean {
    return !this.stopped && this.monitors.every((m) => m.running);
  }

  async start(): Promise<void> {
    this.stopped = false;
    for (const m of this.monitors) this.spawn(m);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const exits: Promise<void>[] = [];
    for (const m of this.monitors) {
      clearTimeout(m.timer);
      const ch = m.child;
      if (ch && ch.exitCode === null && ch.signalCode === null) {
        exits.push(new Promise<void>((r) => ch.once('exit', () => r())));
        ch.kill('SIGTERM');
      }
    }
    // every wait has a deadline: a monitor that ignores SIGTERM is killed
    const deadline = new Promise<'late'>((r) => setTimeout(() => r('late'), 1000).unref());
    if ((await Promise.race([Promise.all(exits), deadline])) === 'late') for (const m of this.monitors) m.child?.kill('SIGKILL');
  }

  private emit(c: KernelChange): void {
    for (const fn of this.listeners) fn(c);
  }

  private spawn(m: Monitor): void {
    if (this.stopped) return;
    const child = spawnCounted(m.argv[0]!, m.argv.slice(1), { stdio: ['ignore', 'pipe', 'ignore'] });
    m.child = child;
    let rest = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (s: string) => {
      const lines = (rest + s).split('\n');
      rest = lines.pop()!;
      for (const line of lines) if (m.keep(line)) this.emit({ source: m.source, line });
    });
    child.once('spawn', () => {
      m.running = true;
      m.delayMs = this.firstRestartMs;
      this.emit({ source: m.source, line: MONITOR_STARTED });
    });
    let ended = false;
    const ended$ = (why: string) => {
      if (ended) return;
      ended = true;
      const was = m.running;
      m.running = false;
      if (this.stopped) return;
      this.c.log.warn({ monitor: m.argv.join(' '), why, restartMs: m.delayMs }, 'kernel monitor ended; polling until it is back');
      if (was) this.emit({ source: m.source, line: MONITOR_ENDED });
      m.timer = setTimeout(() => this.spawn(m), m.delayMs);
      m.timer.unref();
      m.delayMs = Math.min(MAX_RESTART_MS, m.delayMs * 2);
    };
    child.once('error', (e) => ended$(e.message));
    child.once('exit', (code, signal) => ended$(signal ? `signal ${signal}` : `exit ${code}`));
  }
}
