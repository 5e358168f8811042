/**
 * Test fixtures: network namespaces the test creates and removes, the router run inside one,
 * and the real dist/weft-net binary invoked as a runtime would. Nothing here touches the
 * machine's own namespace.
 *
 * The underlay, the hosts on it and the routers' argument lists and starts come from the
 * sandbox's own module (`src/sandbox/netlab.ts`), and routers are watched and stopped by the
 * same code as the sandbox's (`src/sys/process.ts`), so the tests exercise what `weft sandbox`
 * uses and keep no second copy of it. This file only runs the sandbox's `ip -batch` lines
 * synchronously, so its helpers stay synchronous.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readlinkSync, rmSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { isAlive, killAndWait, processArgv, terminate } from '../../src/sys/process';
import { attachLines, hostLines, routerArgv, spawnRouter, underlayLines, type LabHostSpec, type UnderlaySpec } from '../../src/sandbox/netlab';
import { RouterClient } from '../../src/common/client';
import { ROOT, WEFT, WEFT_NET } from './needs';

export { ROOT, WEFT, WEFT_NET };

export function sh(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}) {
  const r = spawnSync(cmd, args, { input: opts.input, encoding: 'utf8', timeout: opts.timeoutMs ?? 20_000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr || r.error?.message || `exit ${r.status}`}`);
  return r.stdout;
}

export function tryRun(cmd: string, args: string[], timeoutMs = 20_000): { ok: boolean; out: string; err: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs });
  return { ok: r.status === 0, out: r.stdout ?? '', err: r.stderr ?? '' };
}

export function uid(): string {
  return randomBytes(3).toString('hex');
}

/** A network namespace owned by the test: `ip netns add` on create, `ip netns del` on destroy. */
export class Netns {
  readonly path: string;
  constructor(readonly name: string) {
    this.path = `/var/run/netns/${name}`;
  }
  static create(prefix: string): Netns {
    const ns = new Netns(`${prefix}-${uid()}`);
    sh('ip', ['netns', 'add', ns.name]);
    sh('ip', ['-n', ns.name, 'link', 'set', 'lo', 'up']);
    return ns;
  }
  /** Runs a command inside; throws on failure. */
  run(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): string {
    return sh('nsenter', [`--net=${this.path}`, '--', cmd, ...args], opts);
  }
  /** Runs `ip -batch` lines inside (the sandbox's set-up lines, src/sandbox/netlab.ts); throws at the first failing one. */
  ipBatch(lines: readonly string[]): void {
    if (lines.length) this.run('ip', ['-batch', '-'], { input: lines.join('\n') + '\n' });
  }
  tryRun(cmd: string, args: string[], timeoutMs?: number) {
    return tryRun('nsenter', [`--net=${this.path}`, '--', cmd, ...args], timeoutMs);
  }
  ping(addr: string, count = 1): boolean {
    return this.tryRun('ping', ['-c', String(count), '-W', '1', '-i', '0.2', addr]).ok;
  }
  links(): { ifname: string; master?: string; address: string; mtu: number; flags: string[] }[] {
    return JSON.parse(this.run('ip', ['-j', '-d', 'link', 'show']));
  }
  addrs(dev: string): string[] {
    const j = JSON.parse(this.run('ip', ['-j', '-4', 'addr', 'show', 'dev', dev])) as { addr_info: { local: string; prefixlen: number }[] }[];
    return (j[0]?.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`);
  }
  destroy(): void {
    tryRun('ip', ['netns', 'del', this.name]);
  }
}

export interface CniCall {
  code: number;
  stdout: string;
  stderr: string;
  json: any;
}

/** Runs dist/weft-net inside `host` (the pod host's netns) with env and stdin as a runtime would. */
export function cni(host: Netns | undefined, env: Record<string, string>, conf: unknown, timeoutMs = 30_000): CniCall {
  const stdin = typeof conf === 'string' ? conf : JSON.stringify(conf);
  const argv = host ? ['nsenter', `--net=${host.path}`, '--', WEFT_NET] : [WEFT_NET];
  const r = spawnSync(argv[0]!, argv.slice(1), {
    input: stdin,
    encoding: 'utf8',
    timeout: timeoutMs,
    env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', CNI_PATH: '/opt/cni/bin', ...env },
  });
  let json: any;
  try {
    json = r.stdout.trim() ? JSON.parse(r.stdout) : undefined;
  } catch {
    json = undefined;
  }
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, json };
}

/** Async variant, for concurrent calls. */
export function cniAsync(host: Netns, env: Record<string, string>, conf: unknown): Promise<CniCall> {
  return new Promise((resolvePromise) => {
    const child = spawn('nsenter', [`--net=${host.path}`, '--', WEFT_NET], {
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', CNI_PATH: '/opt/cni/bin', ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const t = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', (code) => {
      clearTimeout(t);
      let json: any;
      try {
        json = stdout.trim() ? JSON.parse(stdout) : undefined;
      } catch {
        json = undefined;
      }
      resolvePromise({ code: code ?? -1, stdout, stderr, json });
    });
    child.stdin.end(typeof conf === 'string' ? conf : JSON.stringify(conf));
  });
}

/** The uplink veth pair RouterProc gives a host namespace (see ensureUplink): part of the host, not a pod's. */
export const UPLINK = ['wup0', 'wup1'];

/** A weft router running in a host netns, with its own state dir, socket and log file. */
export class RouterProc {
  pid: number | undefined;
  readonly dir: string;
  readonly socket: string;
  readonly stateDir: string;
  readonly logFile: string;
  /** Extra environment for the router (e.g. shorter timers). */
  env: Record<string, string> = {};
  /** How long `start` waits for the API to answer. */
  startTimeoutMs = 30_000;

  constructor(
    readonly host: Netns,
    readonly extraArgs: string[] = [],
    dir?: string,
    /** Give the host an uplink with a default route first (see ensureUplink). */
    readonly uplink = true,
  ) {
    this.dir = dir ?? mkdtempSync(join(tmpdir(), 'weft-test-'));
    this.socket = join(this.dir, 'weft.sock');
    this.stateDir = join(this.dir, 'state');
    this.logFile = join(this.dir, 'router.log');
    mkdirSync(this.dir, { recursive: true });
  }

  /**
   * Gives the host namespace an uplink, as a real host has: a veth pair with both ends inside
   * it, an address on one end and the default route through it (nothing leaves the namespace).
   * The router finds its underlay there.
   */
  private ensureUplink(): void {
    if (this.host.tryRun('ip', ['link', 'show', 'wup0']).ok) return;
    this.host.run('ip', ['link', 'add', 'wup0', 'type', 'veth', 'peer', 'name', 'wup1']);
    this.host.run('ip', ['addr', 'add', '192.0.2.1/24', 'dev', 'wup0']);
    this.host.run('ip', ['link', 'set', 'wup0', 'up']);
    this.host.run('ip', ['link', 'set', 'wup1', 'up']);
    if (!this.host.run('ip', ['-4', 'route', 'show', 'default']).trim()) this.host.run('ip', ['route', 'add', 'default', 'dev', 'wup0']);
  }

  /** Everything the router wrote so far (all its runs). */
  get log(): string {
    try {
      return readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  get running(): boolean {
    return this.pid !== undefined && this.isMine(this.pid);
  }

  /** Starts the router and waits (up to `deadlineMs`: a loaded machine starts slowly) until its API answers; fails at once if it exits. */
  async start(deadlineMs = this.startTimeoutMs): Promise<void> {
    if (this.running) throw new Error(`router ${this.pid} in ${this.host.name} already runs`);
    if (this.uplink) this.ensureUplink();
    const args = routerArgv({ stateDir: this.stateDir, socket: this.socket, extra: ['--log-level', 'debug', ...this.extraArgs] });
    const env = Object.fromEntries(Object.entries({ ...process.env, ...this.env }).filter((e): e is [string, string] => e[1] !== undefined));
    const pid = await spawnRouter(WEFT, args, { netnsPath: this.host.path, logFile: this.logFile, env });
    this.pid = pid;
    const client = new RouterClient({ socket: this.socket, timeoutMs: 2000 });
    const deadline = Date.now() + deadlineMs;
    for (;;) {
      if (!isAlive(pid)) throw new Error(`router exited before answering: ${this.log}`);
      if (await client.get('/v1/report').then(() => true, () => false)) return;
      if (Date.now() > deadline) throw new Error(`router did not answer within ${deadlineMs} ms: ${this.log}`);
      await sleep(50);
    }
  }

  report(): any {
    return JSON.parse(sh(WEFT, ['--socket', this.socket, 'report']));
  }

  /** Sends a signal and waits (up to 10 s) for the exit; throws when the router is still there. */
  async kill(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const pid = this.pid;
    if (pid === undefined || !this.isMine(pid)) return;
    if (!(await killAndWait(pid, signal, 10_000))) throw new Error(`router ${pid} in ${this.host.name} still runs 10 s after ${signal}`);
    this.pid = undefined;
  }

  /** Stops the router (SIGTERM, SIGKILL after 5 s) and removes its directory; throws if it survives. */
  async destroy(): Promise<void> {
    const pid = this.pid;
    if (pid !== undefined && this.isMine(pid)) {
      const [t] = await terminate([pid], 5000);
      if (t?.how === 'survived') throw new Error(`router ${pid} in ${this.host.name} survived SIGKILL`);
    }
    this.pid = undefined;
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** True while `pid` is still this router (not a reused pid). */
  private isMine(pid: number): boolean {
    return isAlive(pid) && (processArgv(pid)?.includes(this.socket) ?? false);
  }
}

/** GET inside a namespace (the router's metrics listen on its own loopback). */
export function httpGet(ns: Netns, url: string): { status: number; body: string } {
  const script = `fetch(${JSON.stringify(url)}).then(async r => process.stdout.write(JSON.stringify({status: r.status, body: await r.text()})), e => { process.stdout.write(JSON.stringify({status: 0, body: String(e)})) })`;
  const out = sh('nsenter', [`--net=${ns.path}`, '--', process.execPath, '-e', script]);
  return JSON.parse(out);
}

/** Runs the weft CLI against a router's socket. */
export function weftCli(socket: string, args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(WEFT, ['--socket', socket, ...args], { encoding: 'utf8', timeout: 20_000 });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

/**
 * `dist/weft ARGS` as a child process (not blocking the runner, so the routers it talks to keep
 * answering); its exit code and output. Killed after `timeoutMs`.
 */
export function weftAsync(args: string[], timeoutMs = 180_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn(WEFT, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d) => (stdout += d));
    c.stderr.on('data', (d) => (stderr += d));
    const t = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.on('error', reject);
    c.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Polls until `f` holds (it may answer later) or the deadline passes; returns whether it held. */
export async function until(f: () => boolean | Promise<boolean>, ms = 10_000, every = 100): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    if (await f()) return true;
    if (Date.now() > end) return false;
    await sleep(every);
  }
}

/** Live (not zombie) processes other than this one for which `match` holds. */
function livePids(match: (pid: number) => boolean): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    const pid = Number(d);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    if (match(pid) && isAlive(pid)) out.push(pid);
  }
  return out;
}

/** Live (not zombie) processes whose command line mentions `needle`, e.g. a test's own directory. */
export function processesMentioning(needle: string): number[] {
  return livePids((pid) => processArgv(pid)?.join(' ').includes(needle) === true);
}

/** Live processes in the network namespace at `path`. */
export function processesIn(path: string): number[] {
  const want = `net:[${statSync(path).ino}]`;
  return livePids((pid) => {
    try {
      return readlinkSync(`/proc/${pid}/ns/net`) === want;
    } catch {
      return false; // gone meanwhile
    }
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The CNI env for one attachment. */
export function cniEnv(command: string, containerId: string, netns: string, ifname = 'eth0', extra: Record<string, string> = {}) {
  return { CNI_COMMAND: command, CNI_CONTAINERID: containerId, CNI_NETNS: netns, CNI_IFNAME: ifname, ...extra };
}

/** A weft-net network config pointing at `socket`. */
export function netConf(socket: string, extra: Record<string, unknown> = {}, cniVersion = '1.0.0') {
  return { cniVersion, name: 'weftnet', type: 'weft-net', socket, ...extra };
}

/**
 * Resources a suite makes, removed in reverse order by `cleanup` (call it from `after`).
 * `track` registers anything with a `destroy()` and returns it.
 */
export function scope(): { track: <T extends { destroy(): unknown }>(x: T) => T; defer: (f: () => unknown) => void; cleanup: () => Promise<void> } {
  const fs: (() => unknown)[] = [];
  return {
    track: (x) => {
      fs.push(() => x.destroy());
      return x;
    },
    defer: (f) => void fs.push(f),
    cleanup: async () => {
      for (const f of fs.splice(0).reverse()) await f();
    },
  };
}

/**
 * Host namespaces on an underlay bridge `ul0` (in a namespace of its own, `ul`): host i at
 * `${net}.i/24`, device eth0, no default route unless `opts.defaultRoute`. Made by the
 * sandbox's set-up lines (src/sandbox/netlab.ts).
 */
export function underlayHosts(
  tag: string,
  n: number,
  net: string,
  track: (x: Netns) => Netns,
  opts: { defaultRoute?: boolean; mtu?: number } = {},
): Netns[] & { ul: Netns } {
  const ul = track(Netns.create(`${tag}u`));
  const u: UnderlaySpec = { netns: ul.name, bridge: 'ul0', mtu: opts.mtu };
  ul.ipBatch(underlayLines(u));
  const out: Netns[] = [];
  const specs: LabHostSpec[] = [];
  for (let i = 1; i <= n; i++) {
    const h = track(Netns.create(`${tag}${i}`));
    out.push(h);
    specs.push({ netns: h.name, underlayVeth: `p${i}`, ifname: 'eth0', cidr: `${net}.${i}/24`, defaultRoute: opts.defaultRoute });
  }
  ul.ipBatch(attachLines(u, specs));
  out.forEach((h, k) => h.ipBatch(hostLines(specs[k]!)));
  return Object.assign(out, { ul });
}
