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
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { ipBatch, run } from '../sys/exec';
import { killAndWait, runCaptured } from '../sys/process';
import { SandboxCore } from './base';
import { formatNeigh, neighNeed, raiseNeighLimits, readNeighLimits, type NeighSizing } from './neigh';
import { hostAddress, UNDERLAY_PREFIXLEN, upOptions, type RawUpOptions, type UpOptions } from './options';
import { plugHosts, routerArgv, spawnRouter, underlayLines } from './netlab';
import { mapPool } from './pool';
import { pingDetail, pingMatrix } from './ping';
import type { HostRecord, PodRecord } from './state';
import { downSandbox, sandboxStatus } from './teardown';
import { startKubeApi, waitNodesReady } from './kube';
import { applyKube, describeApplied, loadManifests } from './kube-pods';
import {
  CNI_NETWORK,
  HOST_IFNAME,
  METRICS_ADDR,
  netnsPath,
  POD_IFNAME,
  SandboxError,
  stripPrefixLen,
  UNDERLAY_BRIDGE,
  type Phase,
  type PingMatrix,
  type SandboxHost,
  type SandboxOpenOptions,
  type SandboxPod,
  type SandboxStatus,
  type DownResult,
  type UpResult,
} from './types';
import { describeMesh, exists, fmtMs, podNo } from './util';
import { isoTime } from '../common/time';

export class Sandbox extends SandboxCore {
  /** A sandbox handle with its state file loaded (if there is one). */
  static async open(opts: SandboxOpenOptions = {}): Promise<Sandbox> {
    const sb = new Sandbox(opts);
    await sb.load();
    return sb;
  }

  // ---------------------------------------------------------------- up

  /**
   * Builds the sandbox. On any set-up failure everything made so far is removed again and
   * the error is thrown; ping failures are not set-up failures (see pingMatrix).
   */
  async up(raw: RawUpOptions | UpOptions, signal?: AbortSignal): Promise<UpResult> {
    const o = upOptions(raw as RawUpOptions);
    const manifests = o.manifests ? await loadManifests(o.manifests, o.hosts) : undefined; // refused before anything is made
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
      createdAt: isoTime(),
      mtu: o.mtu,
      weft: o.weft,
      plugin: o.plugin,
      routerArgs: withConsensus(o),
      underlay: { netns: this.underlayNetns, bridge: UNDERLAY_BRIDGE, subnet: `172.30.0.0/${UNDERLAY_PREFIXLEN}`, discover: o.underlay === 'discover', defaultRoute: o.defaultRoute },
      hosts: [],
      pods: [],
    };
    try {
      await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
      await this.save();
      const perHost = o.pods + Math.ceil((manifests?.objects.filter((m) => m.object.kind === 'Pod').length ?? 0) / o.hosts);
      const neigh = await phase('neigh', () => this.sizeNeighbourTable(o.hosts, perHost), (s) => `${formatNeigh(s.after)} (machine-wide; was ${formatNeigh(s.before)}; restored by down)`);
      await phase('underlay', () => this.makeUnderlay(o.hosts, o), () => `${this.underlayNetns}: bridge ${UNDERLAY_BRIDGE}, ${o.hosts} host${o.hosts === 1 ? '' : 's'} on 172.30.0.0/24, mtu ${o.mtu}, ${o.defaultRoute ? 'default route on eth0' : 'no default route'}, routers ${o.underlay === 'advertise' ? 'given --advertise-addr' : 'discover their underlay'}`);
      if (o.kube) await phase('apiserver', () => startKubeApi(this, o.deadlineMs, signal), (l) => `weft kube-apiserver at ${l} in ${this.underlayNetns}, a Node per host; routers get no --peers`);
      await phase('routers', () => this.startRouters(), () => this.hosts.map((h) => `${h.nickname}=${h.pid}`).join(' '));
      await phase('api', () => this.waitReady(o.deadlineMs, signal), () => 'every router answers');
      const mesh = await phase('mesh', () => this.waitMesh(o.deadlineMs, signal), (m) => describeMesh(m, o.hosts));
      await phase(
        'pods',
        async () => {
          // a few hosts at a time: each asks its router, whose first ADD may wait for space from a peer
          await mapPool(this.hosts, 4, (h) => this.addPods(h.index, o.pods, signal));
        },
        () => `${this.pods.length} attached by ${o.plugin}`,
      );
      if (o.kube) await phase('nodes', () => waitNodesReady(this, o.deadlineMs, signal), (n) => `NetworkUnavailable=False on ${n.map((c) => c.node).join(', ')}`);
      if (manifests) await phase('manifests', () => applyKube(this, manifests, { deadlineMs: o.deadlineMs, signal }), describeApplied);
      this.st.readyAt = isoTime();
      await this.save();
      return { phases, neigh, mesh, hosts: this.hosts, pods: this.pods, ms: Date.now() - t0 };
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

  /**
   * Raises the machine's neighbour table limits for what this sandbox makes (src/sandbox/neigh.ts),
   * recording the original values in the state file first, so a `down` after a crash restores them.
   */
  private async sizeNeighbourTable(hosts: number, pods: number): Promise<NeighSizing> {
    const need = neighNeed(hosts, pods);
    this.st.neigh = { need, original: await readNeighLimits() };
    await this.save();
    const s = await raiseNeighLimits(this.prefix, need);
    this.st.neigh = { need, original: s.original };
    await this.save();
    return s;
  }

  private async makeUnderlay(n: number, o: UpOptions): Promise<void> {
    const ul = this.underlayNetns;
    await run('ip', ['netns', 'add', ul]);
    await ipBatch(underlayLines({ netns: ul, bridge: UNDERLAY_BRIDGE, mtu: o.mtu }), { netns: netnsPath(ul) });
    for (let i = 1; i <= n; i++) this.st.hosts.push(this.newHost(i, i > 1 ? [hostAddress(o.join === 'chain' ? i - 1 : 1)] : []));
    await this.save();
    await this.plugHosts(this.st.hosts, o.mtu);
  }

  /** The record of host `i` (not yet made), its router joining through `peers`. */
  newHost(i: number, peers: string[]): HostRecord {
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
    const discover = this.st.underlay.discover === true;
    rec.routerArgv = routerArgv({ ...rec, advertiseAddr: discover ? undefined : rec.address, metricsAddr: METRICS_ADDR, peers, extra: this.st.routerArgs });
    return rec;
  }

  /** Makes recorded hosts' namespaces, plugs them into the underlay bridge and gives them their address (and default route, unless the sandbox has none). */
  async plugHosts(hosts: HostRecord[], mtu: number): Promise<void> {
    const defaultRoute = this.st.underlay.defaultRoute !== false;
    await mapPool(hosts, 8, (h) => fs.mkdir(h.dir, { recursive: true, mode: 0o700 }));
    await plugHosts({ netns: this.underlayNetns, bridge: UNDERLAY_BRIDGE, mtu }, hosts.map((h) => ({ ...h, cidr: `${h.address}/${UNDERLAY_PREFIXLEN}`, defaultRoute })));
  }

  private async startRouters(): Promise<void> {
    for (const h of this.st.hosts) await this.spawnRouter(h);
  }

  private async spawnRouter(h: HostRecord): Promise<void> {
    await fs.mkdir(h.dir, { recursive: true, mode: 0o700 });
    h.pid = await spawnRouter(this.st.weft, h.routerArgv, { netnsPath: netnsPath(h.netns), logFile: h.logFile });
    h.startedAt = isoTime();
    await this.save();
  }

  // ---------------------------------------------------------------- pods

  /** Attaches `count` more pods to a host, concurrently; returns them. */
  async addPods(hostIndex: number, count: number, signal?: AbortSignal, k8s?: PodRecord['k8s']): Promise<SandboxPod[]> {
    const h = this.host(hostIndex);
    const used = this.st.pods.filter((p) => p.host === hostIndex).map((p) => Number(p.name.slice(p.name.lastIndexOf('-p') + 2)));
    const first = used.length ? Math.max(...used) + 1 : 1;
    const idx = Array.from({ length: count }, (_, k) => first + k);
    const made = await mapPool(idx, 8, async (j) => {
      signal?.throwIfAborted();
      return this.attach(h, j, k8s);
    });
    return made;
  }

  addPod(hostIndex: number): Promise<SandboxPod> {
    return this.addPods(hostIndex, 1).then((p) => p[0]!);
  }

  private async attach(h: SandboxHost, j: number, k8s?: PodRecord['k8s']): Promise<SandboxPod> {
    const name = this.podNetns(h.index, j);
    const rec: PodRecord = { name, host: h.index, containerId: name, ifname: POD_IFNAME, ...(k8s ? { k8s } : {}) };
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
        ...(pod.k8s ? { CNI_ARGS: `K8S_POD_NAMESPACE=${pod.k8s.namespace};K8S_POD_NAME=${pod.k8s.name}` } : {}),
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
    return (await pingDetail(from, to, tries)).ok;
  }

  /** Like ping, and tells whether the kernel refused to send (ENOBUFS: its neighbour table is full). */
  pingDetail(from: SandboxPod, to: SandboxPod | string, tries = 2): Promise<{ ok: boolean; noBufferSpace: boolean }> {
    return pingDetail(from, to, tries);
  }

  /** Every pod pings every other pod (sampled beyond the neighbour-table budget; see ping.ts). */
  pingMatrix(opts: { concurrency?: number; pods?: SandboxPod[]; maxPairs?: number } = {}): Promise<PingMatrix> {
    return pingMatrix(this.pods, opts);
  }

  // ---------------------------------------------------------------- status and down

  status(): Promise<SandboxStatus> {
    return sandboxStatus(this);
  }

  /**
   * Removes the sandbox: routers (SIGTERM, then SIGKILL after `graceMs`), every namespace with
   * the prefix (recorded or not), the sandbox directory, and its share of the neighbour table
   * limits (the originals come back with the last sandbox down). Idempotent.
   */
  async down(graceMs = 5000): Promise<DownResult> {
    const r = await downSandbox(this, graceMs);
    this.forget();
    return r;
  }
}

/**
 * The routers' extra arguments. Hosts that join through host 1 (`seed`) keep the router's
 * default (the peers given + 1): host 1 owns the range at once and the others ask it for space,
 * as in the seed documents (the second host's first pod in 10.40.0.0/13). Hosts that join in a
 * chain start their ring by consensus among all the hosts of `up` (as Weave's documentation has
 * every peer launched with the same `--ipalloc-init consensus=N`): with the default, host 1
 * decided alone and two hosts further down the chain could agree on a second ring before
 * hearing of the first (a ring conflict, addresses handed out twice). Kubernetes mode decides
 * from the Nodes, and an operator's own `--ipalloc-init` wins.
 */
export function withConsensus(o: Pick<UpOptions, 'kube' | 'routerArgs' | 'hosts' | 'join'>): string[] {
  if (o.kube || o.join !== 'chain' || o.routerArgs.some((a) => a.split('=')[0] === '--ipalloc-init')) return o.routerArgs;
  return [...o.routerArgs, '--ipalloc-init', `consensus=${o.hosts}`];
}
