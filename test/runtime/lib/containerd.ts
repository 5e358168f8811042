/**
 * containerd run by a test: inside the test's network namespace, with every path in a
 * directory of the test's own, in a private mount namespace whose fresh /run hides the
 * shim sockets and runc state it would otherwise leave in the machine's /run/containerd.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Netns } from '../../helpers/netns';
import { sleep, tryRun } from '../../helpers/netns';
import { Bg, inPrivateMounts, killPids, waitFor } from './util';
import { processesMentioning } from '../../helpers/netns';

export interface CriOptions {
  /** Image used for pod sandboxes (must be imported into the k8s.io namespace). */
  sandboxImage: string;
  binDir: string;
  confDir: string;
}

export interface ContainerdOptions {
  /** Enables the CRI plugin with these settings; without it the CRI plugin is disabled. */
  cri?: CriOptions;
}

function tomlStr(s: string): string {
  return JSON.stringify(s);
}

export function containerdConfig(dir: string, o: ContainerdOptions): string {
  const lines = [
    'version = 2',
    `root = ${tomlStr(join(dir, 'root'))}`,
    `state = ${tomlStr(join(dir, 'state'))}`,
    `disabled_plugins = ${o.cri ? '[]' : '["io.containerd.grpc.v1.cri"]'}`,
    '[grpc]',
    `  address = ${tomlStr(join(dir, 'containerd.sock'))}`,
    '[ttrpc]',
    `  address = ${tomlStr(join(dir, 'containerd.sock.ttrpc'))}`,
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${tomlStr(join(dir, 'opt'))}`,
  ];
  if (o.cri) {
    lines.push(
      '[plugins."io.containerd.grpc.v1.cri"]',
      `  sandbox_image = ${tomlStr(o.cri.sandboxImage)}`,
      // the sandbox lacks CAP_SYS_RESOURCE: without this RunPodSandbox fails in runc
      '  restrict_oom_score_adj = true',
      '  netns_mounts_under_state_dir = true',
      '  stream_server_address = "127.0.0.1"',
      '  stream_server_port = "0"',
      '  [plugins."io.containerd.grpc.v1.cri".containerd]',
      '    default_runtime_name = "runc"',
      '    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
      '      runtime_type = "io.containerd.runc.v2"',
      '  [plugins."io.containerd.grpc.v1.cri".cni]',
      `    bin_dir = ${tomlStr(o.cri.binDir)}`,
      `    conf_dir = ${tomlStr(o.cri.confDir)}`,
      '    max_conf_num = 1',
    );
  }
  return lines.join('\n') + '\n';
}

export class Containerd {
  readonly socket: string;
  readonly fifoDir: string;
  private constructor(
    readonly dir: string,
    readonly bg: Bg,
  ) {
    this.socket = join(dir, 'containerd.sock');
    this.fifoDir = join(dir, 'fifo');
  }

  /** Starts containerd in `ns` and waits (up to 20 s) until it answers. */
  static async start(ns: Netns, dir: string, o: ContainerdOptions = {}): Promise<Containerd> {
    mkdirSync(join(dir, 'fifo'), { recursive: true });
    const config = join(dir, 'config.toml');
    writeFileSync(config, containerdConfig(dir, o));
    // a fresh /run for containerd and its shims: /run/containerd/s/* and runc state stay in it
    const argv = inPrivateMounts(ns.path, [], ['containerd', '--config', config, '--log-level', 'info'], ['mount -n -t tmpfs -o mode=0755 weft-test-run /run']);
    const bg = new Bg(argv);
    const c = new Containerd(dir, bg);
    try {
      await waitFor(
        'containerd to answer',
        () => {
          if (!bg.running) throw new Error(`containerd exited: ${bg.err.slice(-2000)}`);
          return tryRun('ctr', ['-a', c.socket, 'version'], 5000).ok;
        },
        20_000,
        100,
      );
    } catch (e) {
      await c.stop();
      throw e;
    }
    return c;
  }

  /** `ctr` against this containerd, in namespace `namespace`; throws on failure. */
  ctr(namespace: string, args: string[], timeoutMs = 30_000): string {
    const r = tryRun('ctr', ['-a', this.socket, '-n', namespace, ...args], timeoutMs);
    if (!r.ok) throw new Error(`ctr ${args.join(' ')}: ${r.err || r.out}`);
    return r.out;
  }

  tryCtr(namespace: string, args: string[], timeoutMs = 30_000) {
    return tryRun('ctr', ['-a', this.socket, '-n', namespace, ...args], timeoutMs);
  }

  /** Tasks of a namespace as `{id, pid, status}`. */
  tasks(namespace: string): { id: string; pid: number; status: string }[] {
    return this.ctr(namespace, ['task', 'ls'])
      .split('\n')
      .slice(1)
      .map((l) => l.trim().split(/\s+/))
      .filter((f) => f.length >= 3 && f[0])
      .map(([id, pid, status]) => ({ id: id!, pid: Number(pid), status: status! }));
  }

  containers(namespace: string): string[] {
    return this.ctr(namespace, ['container', 'ls', '-q'])
      .split('\n')
      .map((s) => s.trim())
      .filter(Boolean);
  }

  /**
   * Kills every task and removes every container in `namespaces`, stops containerd, then
   * SIGKILLs whatever still names this containerd's socket (shims, stray ctr clients).
   */
  async stop(namespaces: string[] = []): Promise<void> {
    if (this.bg.running) {
      for (const n of namespaces) {
        const tasks = (() => {
          try {
            return this.tasks(n);
          } catch {
            return [];
          }
        })();
        for (const t of tasks) this.tryCtr(n, ['task', 'kill', '-s', 'SIGKILL', t.id], 10_000);
        for (const t of tasks) {
          const deadline = Date.now() + 10_000;
          while (Date.now() < deadline && !this.tryCtr(n, ['task', 'delete', t.id], 10_000).ok) await sleep(200);
        }
        for (const c of (() => {
          try {
            return this.containers(n);
          } catch {
            return [];
          }
        })())
          this.tryCtr(n, ['container', 'delete', c], 10_000);
      }
    }
    await this.bg.stop(10_000);
    killPids(processesMentioning(this.socket));
  }
}
