/**
 * N hosts with a router each, and M pods per host, in network namespaces on one machine.
 *
 * Why it is this way: every "host" is a network namespace with one veth on a shared underlay
 * bridge, which itself lives in a namespace of its own, so nothing is created in the machine's
 * namespace and no packet can leave. Routers run detached (own session, output to a log file)
 * so the sandbox outlives `weft sandbox up`; what was made is recorded in a state file after
 * every step, and `down` additionally sweeps every namespace carrying the prefix, so a crash
 * never leaves anything that a later `down` cannot find. Pods are attached by the real plugin
 * binary, invoked exactly as a container runtime would.
 */
import { promises as fs, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { RouterClient } from '../common/client';
import { SysError, WeftError } from '../common/errors';
import { readIfExists } from '../common/fsutil';
import type { Report } from '../router/report';
import { ipBatch, run } from '../sys/exec';
import { isAlive, killAndWait, netnsPids, parentPid, processArgv, runCaptured, spawnDetached, terminate, type Termination } from '../sys/process';
import { checkPrefix, hostAddress, sandboxDir, SANDBOX_ROOT, UNDERLAY_PREFIXLEN, upOptions, type RawUpOptions, type UpOptions } from './options';
import { mapPool, sleep } from './pool';
import { readState, StateWriter, type HostRecord, type PodRecord, type SandboxState } from './state';

export const NETNS_DIR = '/var/run/netns';
const UNDERLAY_BRIDGE = 'br0';
const HOST_IFNAME = 'eth0';
const POD_IFNAME = 'eth0';
const METRICS_ADDR = '127.0.0.1:6782';
const CNI_NETWORK = 'weft';

/** A set-up or operation failure of the sandbox itself (not of a ping). */
export class SandboxError extends WeftError {
  override readonly kind = 'sandbox';
}

export interface SandboxHost extends HostRecord {
  /** /var/run/netns/<netns>. */
  netnsPath: string;
}

export interface SandboxPod extends PodRecord {
  /** /var/run/netns/<name>. */
  netnsPath: string;
  /** Address without prefix length, e.g. 10.32.0.2. */
  address?: string;
}

export interface Phase {
  name: string;
  ms: number;
  detail?: string;
}

export interface MeshWait {
  /** True when every router reported all N peers before the deadline. */
  complete: boolean;
  /** Peers each router reported last (undefined: no answer or no mesh in its report). */
  peers: (number | undefined)[];
  /** Established connections each router reported last. */
  established: (number | undefined)[];
  /** Why it stopped waiting without a full mesh. */
  reason?: string;
  ms: number;
}

export interface UpResult {
  phases: Phase[];
  mesh: MeshWait;
  hosts: SandboxHost[];
  pods: SandboxPod[];
  ms: number;
}

export interface PingResult {
  from: SandboxPod;
  to: SandboxPod;
  ok: boolean;
}

export interface PingMatrix {
  pods: SandboxPod[];
  /**
   * ok[i][j]: pod i reached pod j; null on the diagonal and where an address is missing. A
   * destination whose address another pod holds too is never pinged and counts as false: a
   * reply could come from the wrong pod.
   */
  ok: (boolean | null)[][];
  /** Addresses held by more than one pod (an IPAM failure), with the pods holding them. */
  duplicates: { address: string; pods: string[] }[];
  sameHost: { ok: number; total: number };
  crossHost: { ok: number; total: number };
  /** Pairs pinged; less than totalPairs when the matrix was sampled. */
  pinged: number;
  /** Ordered pairs of pods with addresses. */
  totalPairs: number;
  /** Pings the kernel refused with ENOBUFS (its ARP table, shared with the machine, was full). */
  noBufferSpace: number;
  ms: number;
}

export interface HostStatus {
  host: SandboxHost;
  netnsExists: boolean;
  alive: boolean;
  report?: Report;
  error?: string;
}

export interface PodStatus {
  pod: SandboxPod;
  netnsExists: boolean;
}

export interface SandboxStatus {
  prefix: string;
  dir: string;
  state?: SandboxState;
  hosts: HostStatus[];
  pods: PodStatus[];
  /** Namespaces with the prefix that the state file does not name. */
  strays: string[];
}

export interface DownResult {
  routers: (Termination & { host?: string })[];
  namespaces: string[];
  /** Namespaces that could not be deleted, with the reason. */
  failed: { netns: string; error: string }[];
  /** Processes other than routers still inside a deleted namespace (left alone). */
  others: { pid: number; netns: string; cmd: string }[];
  dirRemoved?: string;
}

export interface SandboxOpenOptions {
  /** Namespace name prefix (default wsb). */
  prefix?: string;
  /** Directory for the state file, router state, sockets and logs (default /run/weft-sandbox/<prefix>). */
  dir?: string;
  /** Progress lines. */
  log?: (line: string) => void;
}

const netnsPath = (name: string) => join(NETNS_DIR, name);
const stripPrefixLen = (cidr: string | undefined) => cidr?.split('/')[0];

export class Sandbox {
  readonly prefix: string;
  readonly dir: string;
  private state: SandboxState | undefined;
  private readonly writer: StateWriter;
  private readonly log: (line: string) => void;

  constructor(opts: SandboxOpenOptions = {}) {
    this.prefix = checkPrefix(opts.prefix ?? 'wsb');
    this.dir = opts.dir ?? sandboxDir(this.prefix);
    this.writer = new StateWriter(this.dir);
    this.log = opts.log ?? (() => undefined);
  }

  /** A sandbox handle with its state file loaded (if there is one). */
  static async open(opts: SandboxOpenOptions = {}): Promise<Sandbox> {
    const sb = new Sandbox(opts);
    await sb.load();
    return sb;
  }

  async load(): Promise<SandboxState | undefined> {
    this.state = await readState(this.dir);
    return this.state;
  }

  /** True when a state file was loaded or written. */
  get exists(): boolean {
    return this.state !== undefined;
  }

  get underlayNetns(): string {
    return `${this.prefix}-ul`;
  }

  hostNetns(i: number): string {
    return `${this.prefix}-h${i}`;
  }

  podNetns(host: number, j: number): string {
    return `${this.prefix}-h${host}-p${j}`;
  }

  get hosts(): SandboxHost[] {
    return (this.state?.hosts ?? []).map((h) => ({ ...h, netnsPath: netnsPath(h.netns) }));
  }

  get pods(): SandboxPod[] {
    return (this.state?.pods ?? []).map((p) => ({ ...p, netnsPath: netnsPath(p.name), address: stripPrefixLen(p.cidr) }));
  }

  /** Host by 1-based index. */
  host(i: number): SandboxHost {
    const h = this.hosts.find((x) => x.index === i);
    if (!h) throw new SandboxError(`no host ${i} in the sandbox (hosts: ${this.hosts.map((x) => x.index).join(', ') || 'none'})`);
    return h;
  }

  podsOf(i: number): SandboxPod[] {
    return this.pods.filter((p) => p.host === i);
  }

  private get st(): SandboxState {
    if (!this.state) throw new SandboxError(`no sandbox with prefix ${this.prefix} (no ${join(this.dir, 'state.json')}); start one with weft sandbox up`);
    return this.state;
  }

  private save(): Promise<void> {
    return this.writer.write(this.st);
  }

  /** Namespaces whose name carries this sandbox's prefix, whether recorded or not. */
  async namespaces(): Promise<string[]> {
    let names: string[];
    try {
      names = await fs.readdir(NETNS_DIR);
    } catch {
      return [];
    }
    return names.filter((n) => n.startsWith(`${this.prefix}-`)).sort();
  }

  // ---------------------------------------------------------------- up

  /**
   * Builds the sandbox. On any set-up failure everything made so far is removed again and
   * the error is thrown; ping failures are not set-up failures (see pingMatrix).
   */
  async up(raw: RawUpOptions | UpOptions, signal?: AbortSignal): Promise<UpResult> {
    const o = upOptions(raw as RawUpOptions);
    const hasFile = await exists(join(this.dir, 'state.json'));
    const existing = await this.namespaces();
    if (hasFile || existing.length > 0) {
      const what = hasFile ? `state file ${join(this.dir, 'state.json')}` : `namespaces ${existing.slice(0, 4).join(', ')}${existing.length > 4 ? ', ...' : ''}`;
      throw new SandboxError(`a sandbox with prefix ${this.prefix} already exists (${what}); remove it first with weft sandbox down${this.prefix === 'wsb' ? '' : ` --prefix ${this.prefix}`}`);
    }
    const t0 = Date.now();
    const phases: Phase[] = [];
    const phase = async <T>(name: string, fn: () => Promise<T>, detail?: (r: T) => string): Promise<T> => {
      signal?.throwIfAborted();
      const s = Date.now();
      const r = await fn();
      const p = { name, ms: Date.now() - s, detail: detail?.(r) };
      phases.push(p);
      this.log(`  ${name.padEnd(10)} ${fmtMs(p.ms).padStart(7)}${p.detail ? `  ${p.detail}` : ''}`);
      return r;
    };

    this.state = {
      version: 1,
      prefix: this.prefix,
      dir: this.dir,
      createdAt: new Date().toISOString(),
      mtu: o.mtu,
      weft: o.weft,
      plugin: o.plugin,
      routerArgs: o.routerArgs,
      underlay: { netns: this.underlayNetns, bridge: UNDERLAY_BRIDGE, subnet: `172.30.0.0/${UNDERLAY_PREFIXLEN}` },
      hosts: [],
      pods: [],
    };
    try {
      await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
      await this.save();
      await phase('underlay', () => this.makeUnderlay(o.hosts, o.mtu, o.join), () => `${this.underlayNetns}: bridge ${UNDERLAY_BRIDGE}, ${o.hosts} host${o.hosts === 1 ? '' : 's'} on 172.30.0.0/24, mtu ${o.mtu}`);
      await phase('routers', () => this.startRouters(), () => this.hosts.map((h) => `${h.nickname}=${h.pid}`).join(' '));
      await phase('api', () => this.waitReady(o.deadlineMs, signal), () => 'every router answers');
      const mesh = await phase('mesh', () => this.waitMesh(o.deadlineMs, signal), (m) => describeMesh(m, o.hosts));
      await phase(
        'pods',
        async () => {
          for (const h of this.hosts) await this.addPods(h.index, o.pods, signal);
        },
        () => `${this.pods.length} attached by ${o.plugin}`,
      );
      this.st.readyAt = new Date().toISOString();
      await this.save();
      return { phases, mesh, hosts: this.hosts, pods: this.pods, ms: Date.now() - t0 };
    } catch (e) {
      this.log(`set-up ${signal?.aborted ? 'interrupted' : 'failed'}; removing what was made...`);
      const d = await this.down().catch((de: unknown) => {
        this.log(`clean-up failed too: ${(de as Error).message}`);
        return undefined;
      });
      if (d) this.log(`removed ${d.namespaces.length} namespaces, ${d.routers.length} routers`);
      throw e;
    }
  }

  private async makeUnderlay(n: number, mtu: number, joinBy: UpOptions['join']): Promise<void> {
    const ul = this.underlayNetns;
    await run('ip', ['netns', 'add', ul]);
    await ipBatch(['link set lo up', `link add ${UNDERLAY_BRIDGE} mtu ${mtu} type bridge`, `link set ${UNDERLAY_BRIDGE} up`], { netns: netnsPath(ul) });
    for (let i = 1; i <= n; i++) {
      const dir = join(this.dir, `h${i}`);
      const rec: HostRecord = {
        index: i,
        nickname: `host${i}`,
        netns: this.hostNetns(i),
        address: hostAddress(i),
        underlayVeth: `h${i}`,
        ifname: HOST_IFNAME,
        dir,
        stateDir: join(dir, 'state'),
        socket: join(dir, 'weft.sock'),
        logFile: join(dir, 'router.log'),
        routerArgv: [],
      };
      rec.routerArgv = [
        'router',
        '--state-dir', rec.stateDir,
        '--socket', rec.socket,
        '--advertise-addr', rec.address,
        '--metrics-addr', METRICS_ADDR,
        '--nickname', rec.nickname,
        ...(i > 1 ? ['--peers', hostAddress(joinBy === 'chain' ? i - 1 : 1)] : []),
        ...this.st.routerArgs,
      ];
      this.st.hosts.push(rec);
    }
    await this.save();
    await mapPool(this.st.hosts, 8, async (h) => {
      await run('ip', ['netns', 'add', h.netns]);
      await fs.mkdir(h.dir, { recursive: true, mode: 0o700 });
    });
    // the veth pairs are born inside the namespaces: the underlay end here, the host end in its netns
    await ipBatch(
      this.st.hosts.flatMap((h) => [
        `link add ${h.underlayVeth} mtu ${mtu} type veth peer name ${h.ifname} mtu ${mtu} netns ${h.netns}`,
        `link set ${h.underlayVeth} master ${UNDERLAY_BRIDGE}`,
        `link set ${h.underlayVeth} up`,
      ]),
      { netns: netnsPath(ul) },
    );
    await mapPool(this.st.hosts, 8, (h) =>
      ipBatch(['link set lo up', `addr add ${h.address}/${UNDERLAY_PREFIXLEN} dev ${h.ifname}`, `link set ${h.ifname} up`], { netns: netnsPath(h.netns) }),
    );
  }

  private async startRouters(): Promise<void> {
    for (const h of this.st.hosts) await this.spawnRouter(h);
  }

  private async spawnRouter(h: HostRecord): Promise<void> {
    await fs.mkdir(h.dir, { recursive: true, mode: 0o700 });
    await fs.appendFile(h.logFile, `--- ${new Date().toISOString()} ${this.st.weft} ${h.routerArgv.join(' ')}\n`);
    h.pid = await spawnDetached(this.st.weft, h.routerArgv, { netns: netnsPath(h.netns), logFile: h.logFile });
    h.startedAt = new Date().toISOString();
    await this.save();
  }

  /** True when `pid` is this host's router (guards against a reused pid). */
  private isRouter(h: HostRecord, pid: number | undefined = h.pid): boolean {
    if (!pid || !isAlive(pid)) return false;
    const argv = processArgv(pid);
    return !!argv && argv.includes('router') && argv.includes(h.socket);
  }

  private client(h: HostRecord, timeoutMs = 5000): RouterClient {
    return new RouterClient({ socket: h.socket, timeoutMs });
  }

  /** The router's report (GET /v1/report, what `weft report` prints). */
  report(host: number | HostRecord, timeoutMs = 5000): Promise<Report> {
    const h = typeof host === 'number' ? this.host(host) : host;
    return this.client(h, timeoutMs).get<Report>('/v1/report');
  }

  /** Every router's report, or the error for the ones that do not answer. */
  reports(timeoutMs = 5000): Promise<(Report | Error)[]> {
    return Promise.all(this.hosts.map((h) => this.report(h, timeoutMs).catch((e: Error) => e)));
  }

  /** Waits until each router (or only `only`) answers its API; fails at once when one exits. */
  async waitReady(deadlineMs: number, signal?: AbortSignal, only?: number[]): Promise<void> {
    const deadline = Date.now() + deadlineMs;
    let pending = this.st.hosts.filter((h) => !only || only.includes(h.index));
    const last = new Map<number, string>();
    for (;;) {
      signal?.throwIfAborted();
      for (const h of pending) {
        if (!h.pid || !isAlive(h.pid)) throw new SandboxError(`router of ${h.nickname} (pid ${h.pid ?? '-'}) exited; its log ${h.logFile} ends:\n${await tail(h.logFile, 12)}`);
      }
      const answered = await Promise.all(
        pending.map((h) =>
          this.report(h, 2000).then(
            () => true,
            (e: Error) => (last.set(h.index, e.message), false),
          ),
        ),
      );
      pending = pending.filter((_, k) => !answered[k]);
      if (pending.length === 0) return;
      if (Date.now() >= deadline) {
        const h = pending[0]!;
        throw new SandboxError(
          `router of ${pending.map((x) => x.nickname).join(', ')} did not answer within ${fmtMs(deadlineMs)} (${last.get(h.index)}); the log ${h.logFile} ends:\n${await tail(h.logFile, 12)}`,
        );
      }
      await sleep(100, signal);
    }
  }

  /**
   * Best effort: waits until every router reports all hosts as peers and an established
   * connection to each of the others (N-1 each), up to the deadline, and
   * then reports what it saw. Routers whose report has no mesh section cannot get there, so
   * it does not wait for those.
   */
  async waitMesh(deadlineMs: number, signal?: AbortSignal): Promise<MeshWait> {
    const t0 = Date.now();
    const n = this.st.hosts.length;
    for (;;) {
      const rs = await this.reports(2000);
      const peers = rs.map((r) => (r instanceof Error ? undefined : r.mesh?.peers?.length));
      const established = rs.map((r) => (r instanceof Error ? undefined : r.mesh?.connections?.filter((c) => c.state === 'established').length));
      const ms = Date.now() - t0;
      if (peers.every((p, i) => p !== undefined && p >= n && (established[i] ?? 0) >= n - 1)) return { complete: true, peers, established, ms };
      if (rs.some((r) => !(r instanceof Error) && !r.mesh)) return { complete: false, peers, established, ms, reason: 'the routers report no mesh' };
      if (ms >= deadlineMs) return { complete: false, peers, established, ms, reason: `not all ${n} peers within ${fmtMs(deadlineMs)}` };
      await sleep(250, signal);
    }
  }

  // ---------------------------------------------------------------- pods

  /** Attaches `count` more pods to a host, concurrently; returns them. */
  async addPods(hostIndex: number, count: number, signal?: AbortSignal): Promise<SandboxPod[]> {
    const h = this.host(hostIndex);
    const used = this.st.pods.filter((p) => p.host === hostIndex).map((p) => Number(p.name.slice(p.name.lastIndexOf('-p') + 2)));
    const first = used.length ? Math.max(...used) + 1 : 1;
    const idx = Array.from({ length: count }, (_, k) => first + k);
    const made = await mapPool(idx, 8, async (j) => {
      signal?.throwIfAborted();
      return this.attach(h, j);
    });
    return made;
  }

  addPod(hostIndex: number): Promise<SandboxPod> {
    return this.addPods(hostIndex, 1).then((p) => p[0]!);
  }

  private async attach(h: SandboxHost, j: number): Promise<SandboxPod> {
    const name = this.podNetns(h.index, j);
    const rec: PodRecord = { name, host: h.index, containerId: name, ifname: POD_IFNAME };
    await run('ip', ['netns', 'add', name]);
    await ipBatch(['link set lo up'], { netns: netnsPath(name) });
    const r = await this.cni(h, 'ADD', rec);
    let cidr: string | undefined;
    let gateway: string | undefined;
    try {
      const res = JSON.parse(r.stdout) as { ips?: { address?: string; gateway?: string }[] };
      cidr = res.ips?.[0]?.address;
      gateway = res.ips?.[0]?.gateway;
    } catch {
      /* reported below */
    }
    if (!cidr) throw new SandboxError(`pod ${name} on ${h.nickname}: weft-net ADD gave no address: ${r.stdout.trim() || '(empty result)'}`);
    rec.cidr = cidr;
    rec.gateway = gateway;
    this.st.pods.push(rec);
    this.st.pods.sort((a, b) => a.host - b.host || podNo(a.name) - podNo(b.name));
    await this.save();
    return { ...rec, netnsPath: netnsPath(name), address: stripPrefixLen(cidr) };
  }

  /** Invokes the plugin in the host's namespace, as a runtime would. Throws on a CNI error. */
  private async cni(h: SandboxHost, command: 'ADD' | 'DEL' | 'CHECK', pod: PodRecord) {
    const st = this.st;
    const conf = { cniVersion: '1.0.0', name: CNI_NETWORK, type: 'weft-net', socket: h.socket };
    const r = await runCaptured('nsenter', [`--net=${h.netnsPath}`, '--', st.plugin], {
      input: JSON.stringify(conf),
      timeoutMs: 60_000,
      env: {
        CNI_COMMAND: command,
        CNI_CONTAINERID: pod.containerId,
        CNI_NETNS: netnsPath(pod.name),
        CNI_IFNAME: pod.ifname,
        CNI_PATH: [join(st.plugin, '..'), '/opt/cni/bin'].join(':'),
      },
    });
    if (r.exitCode !== 0) {
      let msg = r.failure ?? (r.timedOut ? 'no answer within 60 s' : `exit ${r.exitCode}`);
      try {
        const err = JSON.parse(r.stdout) as { code?: number; msg?: string; details?: string };
        if (err.msg) msg = `CNI error ${err.code}: ${err.msg}${err.details ? ` (${err.details})` : ''}`;
      } catch {
        if (r.stderr.trim()) msg += `: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`;
      }
      throw new SandboxError(`pod ${pod.name} on ${h.nickname}: weft-net ${command} failed: ${msg}`);
    }
    return r;
  }

  /** Detaches a pod (CNI DEL through the plugin) and deletes its namespace. */
  async removePod(pod: SandboxPod | string): Promise<void> {
    const name = typeof pod === 'string' ? pod : pod.name;
    const rec = this.st.pods.find((p) => p.name === name);
    if (!rec) throw new SandboxError(`no pod ${name} in the sandbox`);
    await this.cni(this.host(rec.host), 'DEL', rec);
    await run('ip', ['netns', 'del', name]);
    this.st.pods = this.st.pods.filter((p) => p.name !== name);
    await this.save();
  }

  // ---------------------------------------------------------------- hosts and routers

  /** Cuts a host off the underlay: its veth end on the underlay bridge goes down. */
  async disconnect(hostIndex: number): Promise<void> {
    await run('ip', ['link', 'set', this.host(hostIndex).underlayVeth, 'down'], { netns: netnsPath(this.underlayNetns) });
  }

  /** Connects a host to the underlay again. */
  async reconnect(hostIndex: number): Promise<void> {
    await run('ip', ['link', 'set', this.host(hostIndex).underlayVeth, 'up'], { netns: netnsPath(this.underlayNetns) });
  }

  /** Sends a signal to a host's router (SIGKILL to simulate a crash) and waits for its exit. */
  async killRouter(hostIndex: number, sig: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const h = this.st.hosts.find((x) => x.index === hostIndex) ?? this.host(hostIndex);
    if (h.pid && this.isRouter(h)) {
      if (!(await killAndWait(h.pid, sig, 10_000))) throw new SandboxError(`router of ${h.nickname} (pid ${h.pid}) still runs 10 s after ${sig}`);
    }
  }

  /** (Re)starts a host's router with the arguments it had, and waits until it answers. */
  async startRouter(hostIndex: number, deadlineMs = 30_000): Promise<number> {
    const h = this.st.hosts.find((x) => x.index === hostIndex) ?? this.host(hostIndex);
    if (h.pid && this.isRouter(h)) throw new SandboxError(`router of ${h.nickname} already runs (pid ${h.pid})`);
    await this.spawnRouter(h);
    await this.waitReady(deadlineMs, undefined, [hostIndex]);
    return h.pid!;
  }

  async restartRouter(hostIndex: number, sig: NodeJS.Signals = 'SIGTERM'): Promise<number> {
    await this.killRouter(hostIndex, sig);
    return this.startRouter(hostIndex);
  }

  /** Runs a command inside a host's or pod's namespace. */
  exec(where: SandboxHost | SandboxPod | string, cmd: string, args: string[], timeoutMs?: number) {
    const path = typeof where === 'string' ? netnsPath(where) : where.netnsPath;
    return run(cmd, args, { netns: path, timeoutMs });
  }

  /** `weft --socket S status` of a host's router, as the CLI prints it. */
  async weftStatus(hostIndex: number): Promise<string> {
    const h = this.host(hostIndex);
    const { stdout } = await run(this.st.weft, ['--socket', h.socket, 'status'], { timeoutMs: 15_000 });
    return stdout;
  }

  // ---------------------------------------------------------------- connectivity

  /** One ping from a pod to another pod's address (a second try if the first is lost). */
  async ping(from: SandboxPod, to: SandboxPod | string, tries = 2): Promise<boolean> {
    return (await this.pingDetail(from, to, tries)).ok;
  }

  /** Like ping, and tells whether the kernel refused to send (ENOBUFS: its neighbour table is full). */
  async pingDetail(from: SandboxPod, to: SandboxPod | string, tries = 2): Promise<{ ok: boolean; noBufferSpace: boolean }> {
    const addr = typeof to === 'string' ? to : to.address;
    let noBufferSpace = false;
    if (!addr) return { ok: false, noBufferSpace };
    for (let k = 0; k < tries; k++) {
      try {
        await run('ping', ['-c1', '-W1', '-n', '-q', addr], { netns: from.netnsPath, timeoutMs: 5000 });
        return { ok: true, noBufferSpace: false };
      } catch (e) {
        // lost or unreachable; "No buffer space available" means the ARP table overflowed
        if (e instanceof SysError && /No buffer space available/.test(`${e.message}\n${e.stderr}`)) noBufferSpace = true;
      }
    }
    return { ok: false, noBufferSpace };
  }

  /**
   * Every pod pings every other pod, at most `concurrency` pings at a time.
   *
   * Each pinged pair costs two entries in the kernel's ARP table, and that table is shared by
   * every namespace on the machine (net.ipv4.neigh.default.gc_thresh3, 1024 by default, set
   * only in the machine's own namespace). Beyond `maxPairs` (default: half that limit) the
   * matrix is sampled: one pair for every ordered pair of hosts first, then random pairs.
   */
  async pingMatrix(opts: { concurrency?: number; pods?: SandboxPod[]; maxPairs?: number } = {}): Promise<PingMatrix> {
    const t0 = Date.now();
    const pods = opts.pods ?? this.pods;
    const ok: (boolean | null)[][] = pods.map(() => pods.map(() => null));
    const withAddr = pods.map((p, i) => (p.address ? i : -1)).filter((i) => i >= 0);
    const totalPairs = withAddr.length * (withAddr.length - 1);
    const maxPairs = opts.maxPairs ?? neighbourBudget();
    const pairs = totalPairs <= maxPairs ? allPairs(withAddr) : samplePairs(pods, withAddr, maxPairs);
    const holders = new Map<string, string[]>();
    for (const p of pods) if (p.address) holders.set(p.address, [...(holders.get(p.address) ?? []), p.name]);
    const duplicates = [...holders].filter(([, names]) => names.length > 1).map(([address, names]) => ({ address, pods: names }));
    const dup = new Set(duplicates.map((d) => d.address));
    let noBufferSpace = 0;
    await mapPool(pairs, opts.concurrency ?? 16, async ([i, j]) => {
      if (dup.has(pods[j]!.address!)) {
        ok[i]![j] = false;
        return;
      }
      const r = await this.pingDetail(pods[i]!, pods[j]!);
      ok[i]![j] = r.ok;
      if (r.noBufferSpace) noBufferSpace++;
    });
    const sameHost = { ok: 0, total: 0 };
    const crossHost = { ok: 0, total: 0 };
    for (const [i, j] of pairs) {
      const bucket = pods[i]!.host === pods[j]!.host ? sameHost : crossHost;
      bucket.total++;
      if (ok[i]![j]) bucket.ok++;
    }
    return { pods, ok, duplicates, sameHost, crossHost, pinged: pairs.length, totalPairs, noBufferSpace, ms: Date.now() - t0 };
  }

  // ---------------------------------------------------------------- status and down

  async status(): Promise<SandboxStatus> {
    await this.load();
    const all = await this.namespaces();
    const known = new Set([...(this.state ? [this.underlayNetns] : []), ...this.hosts.map((h) => h.netns), ...this.pods.map((p) => p.name)]);
    const hosts = await Promise.all(
      this.hosts.map(async (h): Promise<HostStatus> => {
        const alive = this.isRouter(h);
        const hs: HostStatus = { host: h, netnsExists: all.includes(h.netns), alive };
        if (alive) {
          try {
            hs.report = await this.report(h, 3000);
          } catch (e) {
            hs.error = (e as Error).message;
          }
        }
        return hs;
      }),
    );
    return {
      prefix: this.prefix,
      dir: this.dir,
      state: this.state,
      hosts,
      pods: this.pods.map((p) => ({ pod: p, netnsExists: all.includes(p.name) })),
      strays: all.filter((n) => !known.has(n)),
    };
  }

  /**
   * Removes the sandbox: routers (SIGTERM, then SIGKILL after `graceMs`), every namespace with
   * the prefix (recorded or not), and the sandbox directory. Idempotent.
   */
  async down(graceMs = 5000): Promise<DownResult> {
    let state: SandboxState | undefined;
    try {
      state = await readState(this.dir);
    } catch (e) {
      this.log(`ignoring a damaged state file: ${(e as Error).message}`);
    }
    state ??= this.state;
    const namespaces = await this.namespaces();
    const hosts = state?.hosts ?? [];

    // routers: the recorded pids (when still the same process), and any router found inside
    // one of the namespaces (a crash may have lost its pid)
    const routerPids = new Map<number, string | undefined>();
    for (const h of hosts) if (h.pid && this.isRouter(h)) routerPids.set(h.pid, h.nickname);
    const candidates: { pid: number; netns: string; argv: string[] }[] = [];
    for (const ns of namespaces) {
      for (const pid of await netnsPids(ns)) {
        if (routerPids.has(pid)) continue;
        const argv = processArgv(pid) ?? [];
        if (argv.includes('router') && argv.includes('--socket')) routerPids.set(pid, hosts.find((h) => h.netns === ns)?.nickname ?? ns);
        else if (argv.length) candidates.push({ pid, netns: ns, argv });
      }
    }
    // what a router started (its probes) goes with it; anything else is someone else's
    const children = candidates.filter((c) => routerPids.has(parentPid(c.pid) ?? -1));
    const terms = await terminate([...routerPids.keys()], graceMs);
    const routers = terms.map((t) => ({ ...t, host: routerPids.get(t.pid) }));
    await terminate(
      children.map((c) => c.pid),
      1000,
    );
    const others: DownResult['others'] = candidates
      .filter((c) => !children.includes(c) && isAlive(c.pid))
      .map((c) => ({ pid: c.pid, netns: c.netns, cmd: c.argv.join(' ').slice(0, 80) }));

    // pods first, then hosts, then the underlay
    const order = (n: string) => (n === `${this.prefix}-ul` ? 2 : /-p\d+$/.test(n) ? 0 : 1);
    const removed: string[] = [];
    const failed: DownResult['failed'] = [];
    await mapPool(
      [...namespaces].sort((a, b) => order(a) - order(b)),
      8,
      async (ns) => {
        try {
          await run('ip', ['netns', 'del', ns]);
          removed.push(ns);
        } catch (e) {
          failed.push({ netns: ns, error: (e as Error).message });
        }
      },
    );

    let dirRemoved: string | undefined;
    if (await exists(this.dir)) {
      await fs.rm(this.dir, { recursive: true, force: true });
      dirRemoved = this.dir;
    }
    await fs.rmdir(SANDBOX_ROOT).catch(() => undefined); // only when empty
    this.state = undefined;
    return { routers, namespaces: removed.sort(), failed, others, dirRemoved };
  }
}

/** Half of the kernel's ARP table limit, which every namespace on the machine shares. */
export function neighbourBudget(): number {
  return Math.floor(arpTableLimit() / 2);
}

/** net.ipv4.neigh.default.gc_thresh3 as this process sees it (1024 when unreadable). */
export function arpTableLimit(): number {
  try {
    const n = Number(readFileSync('/proc/sys/net/ipv4/neigh/default/gc_thresh3', 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : 1024;
  } catch {
    return 1024;
  }
}

function allPairs(idx: number[]): [number, number][] {
  const out: [number, number][] = [];
  for (const i of idx) for (const j of idx) if (i !== j) out.push([i, j]);
  return out;
}

/** Up to `max` ordered pairs: one per ordered pair of hosts (both ends varied), then random ones. */
function samplePairs(pods: SandboxPod[], idx: number[], max: number): [number, number][] {
  const byHost = new Map<number, number[]>();
  for (const i of idx) byHost.set(pods[i]!.host, [...(byHost.get(pods[i]!.host) ?? []), i]);
  const hosts = [...byHost.keys()].sort((a, b) => a - b);
  const seen = new Set<string>();
  const out: [number, number][] = [];
  const add = (i: number, j: number) => {
    const k = `${i}>${j}`;
    if (i === j || seen.has(k) || out.length >= max) return;
    seen.add(k);
    out.push([i, j]);
  };
  let turn = 0;
  for (const a of hosts) {
    for (const b of hosts) {
      const src = byHost.get(a)!;
      const dst = byHost.get(b)!;
      const i = src[turn % src.length]!;
      const j = dst[(turn + 1) % dst.length]!;
      add(i, j);
      turn++;
    }
  }
  for (let tries = 0; out.length < max && tries < max * 20; tries++) {
    add(idx[Math.floor(Math.random() * idx.length)]!, idx[Math.floor(Math.random() * idx.length)]!);
  }
  return out;
}

function podNo(name: string): number {
  return Number(name.slice(name.lastIndexOf('-p') + 2));
}

async function exists(path: string): Promise<boolean> {
  try {
    await fs.stat(path);
    return true;
  } catch {
    return false;
  }
}

async function tail(file: string, lines: number): Promise<string> {
  const text = (await readIfExists(file).catch(() => undefined)) ?? '';
  return text.trimEnd().split('\n').slice(-lines).map((l) => `    ${l}`).join('\n') || '    (empty)';
}

export function fmtMs(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

export function describeMesh(m: MeshWait, n: number): string {
  const per = m.peers.map((p, i) => `host${i + 1}:${p ?? '?'}/${m.established[i] ?? '?'}`).join(' ');
  if (m.complete) return `full mesh: ${n} peers each, ${m.established.reduce<number>((a, b) => a + (b ?? 0), 0)} established connections`;
  return `incomplete (${m.reason}); peers/established seen ${per}`;
}
