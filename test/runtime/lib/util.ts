/**
 * Small pieces the runtime tests share: skip reasons, deadlines, background processes,
 * cleanup stacks, and the private mount namespace the runtimes' CNI lookups run in.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, chmodSync, constants, copyFileSync, existsSync, linkSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { Netns, RouterProc, sleep, tryRun, WEFT_NET } from '../../helpers/netns';
import { needs, NETNS } from '../../helpers/needs';

/** A sleep that does not keep the process alive (for grace periods raced against exits). */
export function idle(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

/**
 * Why a runtime test cannot run here, or undefined when it can; under CI a missing program
 * or file fails the test instead, naming it (see test/helpers/needs.ts).
 */
export function runtimeSkip(cmds: string[], files: string[] = []): string | undefined {
  return needs({ ...NETNS, tools: [...NETNS.tools!, ...cmds], files });
}

/** Polls `probe` until it returns a value other than undefined/false, or throws after `timeoutMs`. */
export async function waitFor<T>(what: string, probe: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs: number, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? `: ${(lastErr as Error).message}` : ''}`);
    }
    await sleep(intervalMs);
  }
}

/** Races a promise against a deadline. */
export async function withDeadline<T>(what: string, p: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms: ${what}`)), timeoutMs);
    timer.unref();
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A process running in the background, its output kept. */
export class Bg {
  readonly proc: ChildProcess;
  out = '';
  err = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(
    readonly argv: string[],
    env?: NodeJS.ProcessEnv,
  ) {
    this.proc = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
    this.proc.stdout!.on('data', (d) => (this.out += d));
    this.proc.stderr!.on('data', (d) => (this.err += d));
    this.exited = new Promise((resolve) => this.proc.once('close', (code, signal) => resolve({ code, signal })));
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  get running(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Waits for the exit; throws after `timeoutMs`. */
  wait(timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return withDeadline(`${this.argv.join(' ')} to exit`, this.exited, timeoutMs);
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone (or after 5 s more). */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.running) return;
    this.proc.kill('SIGTERM');
    const done = await Promise.race([this.exited.then(() => true), idle(graceMs).then(() => false)]);
    if (done) return;
    this.proc.kill('SIGKILL');
    await Promise.race([this.exited, idle(5000)]);
  }
}

/** Cleanup steps run in reverse order; every step runs even when earlier ones fail. */
export class Cleanup {
  private readonly steps: { what: string; fn: () => unknown }[] = [];

  defer(what: string, fn: () => unknown): void {
    this.steps.push({ what, fn });
  }

  /** Runs all steps (each with a 60 s deadline); returns the failures, also printed to stderr. */
  async run(): Promise<Error[]> {
    const errors: Error[] = [];
    while (this.steps.length) {
      const { what, fn } = this.steps.pop()!;
      try {
        await withDeadline(`cleanup: ${what}`, Promise.resolve().then(fn), 60_000);
      } catch (e) {
        const err = new Error(`cleanup "${what}" failed: ${(e as Error).message}`);
        process.stderr.write(err.message + '\n');
        errors.push(err);
      }
    }
    return errors;
  }
}

/**
 * Runs the test body, then the cleanup. A body failure wins; cleanup failures fail the test
 * only when the body passed (a leak is a failure too).
 */
export async function withCleanup(body: (c: Cleanup) => Promise<void>): Promise<void> {
  const c = new Cleanup();
  let ok = false;
  try {
    await body(c);
    ok = true;
  } finally {
    const errors = await c.run();
    if (ok && errors.length) throw new AggregateError(errors, errors.map((e) => e.message).join('; '));
  }
}

/**
 * Puts dist/weft-net into `binDir` (a hard link when possible, else a copy): the test keeps
 * the binary it started with even if dist/ is rebuilt meanwhile.
 */
export function installPlugin(binDir: string): string {
  const dst = join(binDir, 'weft-net');
  try {
    linkSync(WEFT_NET, dst);
  } catch {
    copyFileSync(WEFT_NET, dst);
    chmodSync(dst, 0o755);
  }
  return dst;
}

/** Single-quotes for sh. */
export function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The directories ctr and the CNI library look in for plugins, those that exist here. */
export function pluginDirsPresent(): string[] {
  return ['/opt/cni/bin', '/usr/lib/cni'].filter((d) => existsSync(d));
}

/**
 * argv that runs `argv` in the network namespace `netnsPath` and a private mount namespace in
 * which each `[src, dst]` of `binds` is bind-mounted (dst must exist). Nothing of it is seen
 * outside, and it vanishes with the process.
 */
export function inPrivateMounts(netnsPath: string | undefined, binds: [string, string][], argv: string[], extraSetup: string[] = []): string[] {
  const script = [...binds.map(([s, d]) => `mount -n --bind ${shq(s)} ${shq(d)}`), ...extraSetup, 'exec "$@"'].join(' && ');
  const inner = ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', ...argv];
  return netnsPath ? ['nsenter', `--net=${netnsPath}`, '--', ...inner] : inner;
}

export const CNI_RESULTS = '/var/lib/cni/results';

/** Files the CNI library cached for network `net` (`<net>-<containerID>-<ifname>`). */
export function cniResultFiles(net: string): string[] {
  if (!existsSync(CNI_RESULTS)) return [];
  return readdirSync(CNI_RESULTS)
    .filter((f) => f.startsWith(`${net}-`))
    .map((f) => join(CNI_RESULTS, f));
}

export function removeCniResults(net: string): void {
  for (const f of cniResultFiles(net)) rmSync(f, { force: true });
}


/** SIGKILLs each PID (processes found by `processesMentioning` for this test's own paths). */
export function killPids(pids: number[]): void {
  for (const p of pids) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

/** The pod entries of a router report (everything but the bridge gateways). */
export function podAttachments(report: any): any[] {
  return (report.ipam.attachments as any[]).filter((a) => a.network !== '_gateway');
}

/** The first IPv4 address/prefix in `ip -4 -o addr show` output. */
export function parseInet(text: string): string | undefined {
  return /inet (\d+\.\d+\.\d+\.\d+\/\d+)/.exec(text)?.[1];
}

/** Is `addr` (A.B.C.D) inside 10.32.0.0/12? */
export function inWeftRange(addr: string): boolean {
  const [a, b] = addr.split('.').map(Number);
  return a === 10 && b! >= 32 && b! <= 47;
}

/**
 * Makes sure `path` exists as a directory (a mount point for a bind), creating missing
 * components; a cleanup step removes what was created, if still empty.
 */
export function ensureMountPoint(path: string, c: Cleanup): void {
  const created: string[] = [];
  let p = path;
  while (!existsSync(p)) {
    created.unshift(p);
    p = dirname(p);
  }
  for (const d of created) mkdirSync(d);
  if (created.length) {
    c.defer(`remove ${created[0]}`, () => {
      for (const d of [...created].reverse()) {
        try {
          rmdirSync(d);
        } catch {
          /* not empty or already gone: leave it */
        }
      }
    });
  }
}

/** Stops a RouterProc (SIGTERM, then SIGKILL); its directory is left to the caller. */
export async function stopRouter(router: RouterProc): Promise<void> {
  await router.kill('SIGTERM').catch(() => router.kill('SIGKILL'));
}

/**
 * Removes the cgroup directories runc leaves for a parent path (ctr puts containers under
 * /<namespace>/<id> and removes only the leaf) in every hierarchy, deepest first; only
 * empty cgroups can be removed, so this never touches a live one.
 */
export function removeCgroupDirs(parent: string): void {
  const root = '/sys/fs/cgroup';
  const hierarchies = existsSync(join(root, 'cgroup.controllers')) ? [root] : readdirSync(root).map((h) => join(root, h));
  for (const h of hierarchies) {
    const top = join(h, parent);
    if (!existsSync(top)) continue;
    const dirs: string[] = [];
    const walk = (d: string) => {
      dirs.push(d);
      for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(join(d, e.name));
    };
    try {
      walk(top);
    } catch {
      continue;
    }
    for (const d of dirs.reverse()) {
      try {
        rmdirSync(d);
      } catch {
        /* busy: leave it */
      }
    }
  }
}

/** Lazily unmounts every mount at or below `dir` in this mount namespace, deepest first. */
export function unmountUnder(dir: string): void {
  const points = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => !!p && (p === dir || p.startsWith(dir + '/')))
    .map((p) => p.replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
  for (const p of points.sort((a, b) => b.length - a.length)) tryRun('umount', ['-l', p], 10_000);
}

/**
 * Remembers whether `path` exists now; the cleanup step removes it afterwards if it did not
 * (a directory only when empty, so nothing another user put there is lost).
 */
export function removeIfCreated(path: string, c: Cleanup): void {
  if (existsSync(path)) return;
  c.defer(`remove ${path} if created`, () => {
    try {
      if (statSync(path).isDirectory()) rmdirSync(path);
      else rmSync(path, { force: true });
    } catch {
      /* absent or not empty */
    }
  });
}

/**
 * A weft router in a network namespace of the test's own, and empty bin/ and net.d/ under
 * `dir` with the plugin installed in bin/; the cleanup undoes all of it.
 */
export async function routerAndCniDirs(c: Cleanup, dir: string, nsTag: string): Promise<{ ns: Netns; router: RouterProc; bin: string; netd: string }> {
  const ns = Netns.create(nsTag);
  c.defer('delete netns', () => ns.destroy());
  const router = new RouterProc(ns, [], join(dir, 'router'));
  mkdirSync(router.dir, { recursive: true });
  c.defer('stop router', () => stopRouter(router));
  await router.start();
  const bin = join(dir, 'bin');
  const netd = join(dir, 'net.d');
  mkdirSync(bin);
  mkdirSync(netd);
  installPlugin(bin);
  return { ns, router, bin, netd };
}
