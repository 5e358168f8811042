/**
 * The router daemon's composition root: state dir, mesh, IPAM, host network, VXLAN data path,
 * API and the release spool. Stopping it leaves the bridge, veths, VXLAN device and rules in
 * place, so pods keep working and keep talking across hosts while it is down.
 */
import { promises as fs } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { BadRequestError, ConfigError } from '../common/errors';
import { containsCidr, formatCidr, formatIPv4, parseAddrWithPrefix, parseCidr, type Cidr } from '../common/ip';
import { createLogger, type Logger } from '../common/log';
import { readSpool, SPOOL_SUBDIR, stateLinkFor } from '../common/spool';
import { FastDp, type PeerEndpoint } from '../datapath/fastdp';
import { derivePodMtu, HostNetwork } from '../datapath/host';
import { GATEWAY_NETWORK } from '../ipam/allocator';
import { IpamService, type IpamFile, type IpamInit } from '../ipam/service';
import { JsonStore } from '../ipam/store';
import { Mesh } from '../mesh/mesh';
import { derivedMac, loadPeerName } from '../mesh/peername';
import { detectBackend, Iptables } from '../sys/iptables';
import { isMac } from '../common/ip';
import { ApiServer } from './http';
import { Metrics } from './metrics';
import { gatewayKey, IpamApi } from './ipam-api';
import type { RouterOptions } from './options';
import type { ConnectionReport, Report } from './report';
import { replaceAddress, removeAddress, listAddresses, setMaster } from '../sys/link';
import { hostVethName } from '../common/api';
import { PodLinks } from '../datapath/pod-links';
import { WarmIp } from '../sys/warm';
import { CniApi } from './cni-api';

export const VERSION = '0.1.0';

const SPOOL_INTERVAL_MS = 5000;
const addrNum = (a: string) => parseAddrWithPrefix(a)?.addr ?? 0;

/** Timings that tests may shorten through the environment; defaults suit production. */
function envMs(name: string, dflt: number): number {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? v : dflt;
}

function cidrOption(field: string, v: string): Cidr {
  const c = parseCidr(v);
  if (!c) throw new ConfigError(field, `"${v}" is not a network in CIDR notation (e.g. 10.32.0.0/12)`);
  return c;
}

export function parseInit(v: string | undefined, peers: number): IpamInit {
  if (v === undefined) return { mode: 'consensus', size: peers + 1 };
  if (v === 'observer') return { mode: 'observer' };
  let m = /^consensus(?:=(\d+))?$/.exec(v);
  if (m) {
    const size = m[1] ? Number(m[1]) : peers + 1;
    if (size < 1) throw new ConfigError('--ipalloc-init', 'consensus=N needs N of at least 1');
    return { mode: 'consensus', size };
  }
  m = /^seed=(.+)$/.exec(v);
  if (m) {
    const names = m[1]!.split(',').map((s) => s.trim().toLowerCase());
    const bad = names.find((n) => !isMac(n));
    if (bad) throw new ConfigError('--ipalloc-init', `seed names are peer names like 42:8e:e8:c4:52:1b; "${bad}" is not`);
    return { mode: 'seed', names };
  }
  throw new ConfigError('--ipalloc-init', `"${v}" is not consensus=N, seed=NAME,... or observer`);
}

export class Router {
  readonly log: Logger;
  peerName = '';
  readonly uid = randomBytes(8).toString('hex');
  ipam!: IpamService;
  host!: HostNetwork;
  mesh!: Mesh;
  fastdp: FastDp | undefined;
  mtu = 0;
  underlayIp: string | undefined;
  private api!: ApiServer;
  private store!: JsonStore<IpamFile>;
  private exposeStore!: JsonStore<{ exposed: string[] }>;
  private exposed: string[] = [];
  private timers: NodeJS.Timeout[] = [];
  private draining: Promise<void> | undefined;
  private programming: Promise<void> | undefined;
  private reprogram = false;
  private readonly unreachableSince = new Map<string, number>();
  private readonly removedIps = new Set<string>();
  /** Data-path probe results by peer name. */
  readonly health = new Map<string, boolean>();
  private gateway: string | undefined;
  private stopped = false;
  /** Hooks for metrics. */
  onApi?: (op: string, result: 'ok' | 'error', seconds: number) => void;
  metrics: Metrics | undefined;

  /** Share of the range owned by peers this router cannot reach. */
  private unreachableShare(): number {
    if (!this.ipam || !this.mesh) return 0;
    const total = 2 ** (32 - this.ipam.allocator.range.prefix);
    let lost = 0;
    for (const [peer, size] of this.ipam.ring.sizes()) if (peer !== this.peerName && !this.mesh.isReachable(peer)) lost += size;
    return lost / total;
  }

  /** What is missing for this host to serve pods; empty when ready. */
  async readiness(): Promise<string[]> {
    const missing: string[] = [];
    if (!this.host) return ['host network not set up yet'];
    const br = await this.host.verify();
    if (br) missing.push(br);
    const rules = await this.host.verifyRules();
    if (rules) missing.push(rules);
    if (this.fastdp) {
      const dp = await this.fastdp.verify();
      if (dp) missing.push(dp);
    }
    if (!this.api) missing.push('API not listening yet');
    if (!this.ipam) missing.push('IPAM not started');
    else {
      const st = this.ipam.status();
      if (st.status !== 'ready') missing.push(`IPAM cannot allocate: ${st.status}${st.reason ? ` (${st.reason})` : ''}`);
    }
    return missing;
  }

  constructor(readonly opts: RouterOptions) {
    this.log = createLogger({ name: 'weft-router', level: opts.logLevel, file: opts.logFile });
  }

  get nickname(): string {
    return this.opts.nickname ?? hostname();
  }

  async start(): Promise<void> {
    const o = this.opts;
    if (o.passwordFile !== undefined || process.env.WEFT_PASSWORD) {
      throw new ConfigError('--password-file', 'encryption is not available in this version of weft; start without a password');
    }
    const range = cidrOption('--ipalloc-range', o.ipallocRange);
    const defaultSubnet = o.ipallocDefaultSubnet ? cidrOption('--ipalloc-default-subnet', o.ipallocDefaultSubnet) : range;
    if (!containsCidr(range, defaultSubnet)) throw new ConfigError('--ipalloc-default-subnet', `must lie inside --ipalloc-range ${o.ipallocRange}`);
    const init = parseInit(o.ipallocInit, o.peers.length);
    // metrics and health first, so /readyz can say what is not there yet
    this.metrics = new Metrics({
      connections: () => (this.mesh ? this.connectionReports() : []),
      peers: () => this.mesh?.peers().length ?? 0,
      ips: () => ({
        used: this.ipam?.allocator.list().filter((a) => a.network !== GATEWAY_NETWORK).length ?? 0,
        available: this.ipam?.allocator.freeCount() ?? 0,
      }),
      unreachableShare: () => this.unreachableShare(),
      pendingAllocations: () => this.ipam?.pendingAllocations ?? 0,
    });
    this.onApi = (op, r, sec) => this.metrics?.request(op, r, sec);
    await this.metrics.listen(o.metricsAddr, () => this.readiness(), this.log);
    await fs.mkdir(o.stateDir, { recursive: true, mode: 0o700 });
    this.peerName = await loadPeerName(o.stateDir, o.name);

    const opened = await JsonStore.open<IpamFile>(o.stateDir, 'ipam.json', () => this.ipam.snapshot());
    this.store = opened.store;
    this.ipam = new IpamService({
      self: this.peerName,
      range,
      defaultSubnet,
      init,
      log: this.log.child({ component: 'ipam' }),
      commit: () => this.store.commit(),
      spaceTimeoutMs: envMs('WEFT_SPACE_TIMEOUT_MS', 10_000),
    });
    if (opened.data) {
      if (opened.data.range !== formatCidr(range)) {
        throw new ConfigError(
          '--ipalloc-range',
          `${o.ipallocRange} differs from ${opened.data.range} recorded in ${this.store.path}; pods still hold addresses from it. Start with --ipalloc-range ${opened.data.range}, or remove the file once no pod uses it`,
        );
      }
      this.ipam.load(opened.data);
    }
    const ex = await JsonStore.open<{ exposed: string[] }>(o.stateDir, 'expose.json', () => ({ exposed: this.exposed }));
    this.exposeStore = ex.store;
    this.exposed = ex.data?.exposed ?? [];

    const derived = await derivePodMtu(o.advertiseAddr);
    this.mtu = o.mtu ?? derived.mtu;
    this.underlayIp = o.advertiseAddr ?? derived.underlayIp;
    const bridgeMac = derivedMac(`${this.peerName}/${o.bridge}`);
    this.host = new HostNetwork({
      bridge: o.bridge,
      bridgeMac,
      mtu: this.mtu,
      range,
      masquerade: o.masquerade,
      iptables: new Iptables(await detectBackend()),
      log: this.log,
    });
    await this.host.setup();
    await this.restoreBridgeMembers();
    if (this.underlayIp) {
      this.fastdp = new FastDp({ bridge: o.bridge, mtu: this.mtu, localIp: this.underlayIp, underlay: derived.underlay, log: this.log.child({ component: 'fastdp' }) });
      await this.fastdp.setup();
    } else {
      this.log.warn({}, 'no underlay address (no --advertise-addr, no default route): running without the VXLAN data path');
    }

    this.mesh = new Mesh({
      name: this.peerName,
      nickname: this.nickname,
      uid: this.uid,
      port: o.port,
      listenAddr: o.advertiseAddr ?? '0.0.0.0',
      advertise: this.underlayIp ? `${this.underlayIp}:${o.port}` : undefined,
      targets: o.peers,
      heartbeatMs: envMs('WEFT_HEARTBEAT_MS', 5000),
      retryMinMs: envMs('WEFT_RETRY_MIN_MS', 1000),
      retryMaxMs: envMs('WEFT_RETRY_MAX_MS', 360_000),
      log: this.log.child({ component: 'mesh' }),
      onTraffic: (d, k, b) => this.metrics?.traffic(d, k, b),
    });
    this.mesh.setMeta('bridgeMac', bridgeMac);
    if (this.underlayIp) this.mesh.setMeta('underlay', this.underlayIp);
    this.ipam.attach(this.mesh);
    this.mesh.on('topology', () => this.scheduleProgram());
    await this.mesh.start();

    await this.drainSpool();
    this.api = new ApiServer(this.log);
    new IpamApi({
      ipam: this.ipam,
      store: this.store as JsonStore<unknown>,
      host: this.host,
      mtu: () => this.mtu,
      log: this.log,
      observe: (op, r, s) => this.onApi?.(op, r, s),
    }).register(this.api);
    this.registerApi();
    // speed (issue 11): the CNI verbs' netlink work, done here through warm `ip` processes
    const warmIp = new WarmIp();
    await warmIp.start();
    const podLinks = new PodLinks({ ip: warmIp, attachments: () => this.ipam.allocator.list(), log: this.log.child({ component: 'pods' }) });
    await podLinks.start();
    new CniApi({ ipam: this.ipam, store: this.store as JsonStore<unknown>, host: this.host, links: podLinks, mtu: () => this.mtu, log: this.log, observe: (op, r, s) => this.onApi?.(op, r, s) }).register(this.api);
    await this.api.listen(o.socket);
    await this.publishStateDir();

    const every = (ms: number, f: () => void) => {
      const t = setInterval(f, ms);
      t.unref();
      this.timers.push(t);
    };
    every(SPOOL_INTERVAL_MS, () => void this.drainSpool());
    every(envMs('WEFT_PROGRAM_MS', 5000), () => void this.repair().finally(() => this.scheduleProgram()));
    every(envMs('WEFT_PROBE_MS', 10_000), () => void this.probePeers());
    every(2000, () => this.mesh.setMeta('ipamFree', this.ipam.allocator.freeCount()));
    void this.claimGateway();
    this.log.info(
      { peer: this.peerName, nickname: this.nickname, socket: o.socket, range: formatCidr(range), mtu: this.mtu, underlay: derived.underlay, underlayIp: this.underlayIp, allocations: this.ipam.allocator.list().length },
      'router started',
    );
  }

  /** Takes this host's address on the pod network (the pods' gateway) as soon as it has space. */
  private async claimGateway(): Promise<void> {
    const subnet = this.ipam.allocator.defaultSubnet;
    while (!this.stopped) {
      try {
        const rec = await this.ipam.allocate(gatewayKey(this.opts.bridge, subnet), subnet, undefined, { bridge: this.opts.bridge });
        await this.store.commit();
        await this.host.ensureGateway(rec.address);
        this.gateway = rec.address;
        if (this.fastdp) await this.fastdp.startResponder(formatIPv4(addrNum(rec.address)));
        this.mesh.setMeta('gateway', formatIPv4(addrNum(rec.address)));
        this.log.info({ address: rec.address }, 'bridge has its address on the pod network');
        return;
      } catch (e) {
        this.log.debug({ err: (e as Error).message }, 'no gateway address yet; retrying');
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  private registerApi(): void {
    const strings = (b: unknown, field: string): string[] => {
      const v = (b as Record<string, unknown> | undefined)?.[field];
      if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw new BadRequestError(`${field} must be a list of strings`);
      return v as string[];
    };
    this.api
      .on('GET', '/v1/report', () => this.report())
      .on('POST', '/v1/connect', (b) => {
        const addrs = strings(b, 'addresses');
        for (const a of addrs) if (!/^[\w.-]+(:\d{1,5})?$/.test(a)) throw new BadRequestError(`"${a}" is not HOST or HOST:PORT`);
        this.mesh.connect(addrs);
        return { connecting: addrs };
      })
      .on('POST', '/v1/forget', (b) => ({ forgotten: this.mesh.forget(strings(b, 'addresses')) }))
      .on('POST', '/v1/rmpeer', async (b) => {
        const [peer] = strings(b, 'peers');
        const target = this.resolvePeer(peer ?? '');
        const r = await this.ipam.rmpeer(target);
        const ip = this.mesh.topology.get(target)?.meta.underlay;
        if (typeof ip === 'string') this.removedIps.add(ip);
        this.mesh.removePeer(target);
        this.scheduleProgram();
        return { peer: target, addresses: r.addresses };
      })
      .on('POST', '/v1/expose', async (b) => {
        const cidrs = strings(b, 'addresses');
        if (cidrs.length === 0) {
          if (!this.gateway) throw new BadRequestError(`no address on the pod network yet (IPAM: ${this.ipam.status().status})`);
          return { exposed: [this.gateway] };
        }
        for (const c of cidrs) {
          const a = parseAddrWithPrefix(c);
          if (!a || c.indexOf('/') < 0) throw new BadRequestError(`"${c}" is not ADDRESS/PREFIX (e.g. 10.0.0.100/24)`);
          await replaceAddress(this.opts.bridge, c);
          if (!this.exposed.includes(c)) this.exposed.push(c);
        }
        await this.exposeStore.commit();
        return { exposed: cidrs };
      })
      .on('POST', '/v1/hide', async (b) => {
        const asked = strings(b, 'addresses');
        const cidrs = asked.length ? asked : [...this.exposed];
        for (const c of cidrs) {
          if (c === this.gateway) throw new BadRequestError(`${c} is the pods' gateway on this host; it stays while the router runs`);
          if (!this.exposed.includes(c) && !(await listAddresses(this.opts.bridge)).includes(c)) throw new BadRequestError(`${c} is not exposed`);
        }
        for (const c of cidrs) await removeAddress(this.opts.bridge, c);
        this.exposed = this.exposed.filter((c) => !cidrs.includes(c));
        await this.exposeStore.commit();
        return { hidden: cidrs };
      });
  }

  /** A peer named by its name or nickname. */
  private resolvePeer(p: string): string {
    const all = this.mesh.peers();
    const hit = all.find((e) => e.name === p.toLowerCase()) ?? all.find((e) => e.nickname === p);
    if (hit) return hit.name;
    if (isMac(p) && this.ipam.ring.sizes().has(p.toLowerCase())) return p.toLowerCase();
    throw new BadRequestError(`no peer named "${p}"`);
  }

  /**
   * Puts back what someone removed: the bridge (with its addresses and the pods' veths),
   * weft's rules, the VXLAN device. Runs on the reconcile timer.
   */
  private async repair(): Promise<void> {
    if (this.stopped) return;
    try {
      const broken = [await this.host.verify(), await this.host.verifyRules(), await this.fastdp?.verify()].filter(Boolean);
      if (broken.length === 0) return;
      this.log.warn({ broken }, 'repairing the host network');
      this.host.invalidate();
      await this.host.setup();
      await this.restoreBridgeMembers();
      if (this.fastdp) await this.fastdp.setup();
    } catch (e) {
      this.log.error({ err: (e as Error).message }, 'repairing the host network failed');
    }
  }

  /**
   * Puts on the bridge what belongs there: its gateway and exposed addresses, and the host
   * end of every pod's veth (a bridge deleted and created again has lost them all).
   */
  private async restoreBridgeMembers(): Promise<void> {
    for (const rec of this.ipam.allocator.list()) {
      if (rec.network === GATEWAY_NETWORK) await this.host.ensureGateway(rec.address);
      else await setMaster(hostVethName(rec), this.opts.bridge);
    }
    for (const e of this.exposed) await replaceAddress(this.opts.bridge, e);
  }

  /** Debounced reconciliation of the VXLAN forwarding entries with the topology. */
  private scheduleProgram(): void {
    if (!this.fastdp || this.stopped) return;
    if (this.programming) {
      this.reprogram = true;
      return;
    }
    this.programming = (async () => {
      do {
        this.reprogram = false;
        try {
          await this.program();
        } catch (e) {
          this.log.error({ err: (e as Error).message }, 'programming the VXLAN data path failed');
        }
      } while (this.reprogram && !this.stopped);
      this.programming = undefined;
    })();
  }

  private async program(): Promise<void> {
    const grace = envMs('WEFT_PEER_GRACE_MS', 60_000);
    const now = Date.now();
    const peers: PeerEndpoint[] = [];
    const gone = new Set(this.removedIps);
    for (const p of this.mesh.peers()) {
      if (p.name === this.peerName) continue;
      const ip = typeof p.meta.underlay === 'string' ? p.meta.underlay : undefined;
      if (!ip) continue;
      if (p.reachable) {
        this.unreachableSince.delete(p.name);
        peers.push({ name: p.name, ip, bridgeMac: typeof p.meta.bridgeMac === 'string' ? p.meta.bridgeMac : undefined });
      } else {
        const since = this.unreachableSince.get(p.name) ?? now;
        this.unreachableSince.set(p.name, since);
        // keep forwarding to a peer that may come back; let go after the grace period
        if (now - since > grace) gone.add(ip);
        else peers.push({ name: p.name, ip, bridgeMac: typeof p.meta.bridgeMac === 'string' ? p.meta.bridgeMac : undefined });
      }
    }
    await this.fastdp!.program(peers, [...gone]);
  }

  /** Probes the data path to every reachable peer that has a bridge address. */
  private async probePeers(): Promise<void> {
    if (!this.fastdp || !this.gateway) return;
    await Promise.all(
      this.mesh.peers().map(async (p) => {
        const gw = p.meta.gateway;
        if (p.name === this.peerName || typeof gw !== 'string' || !p.reachable) return;
        const ok = await this.fastdp!.probe(gw);
        if (this.health.get(p.name) !== ok) this.log.info({ peer: p.name, nickname: p.nickname, ok }, 'data path to peer');
        this.health.set(p.name, ok);
      }),
    );
  }

  /** Tells the plugin where to spool releases while this router is down: `<socket>.state` -> state dir. */
  private async publishStateDir(): Promise<void> {
    const link = stateLinkFor(this.opts.socket);
    const tmp = `${link}.${process.pid}`;
    await fs.rm(tmp, { force: true });
    await fs.symlink(await fs.realpath(this.opts.stateDir), tmp);
    await fs.rename(tmp, link);
  }

  /** Applies releases the plugin recorded while this router was unreachable. */
  drainSpool(): Promise<void> {
    this.draining ??= (async () => {
      try {
        const dir = join(this.opts.stateDir, SPOOL_SUBDIR);
        const items = await readSpool(dir);
        if (items.length === 0) return;
        const done: string[] = [];
        for (const it of items) {
          if (!it.rec) {
            this.log.warn({ path: it.path, err: it.error }, 'unreadable release record removed');
            done.push(it.path);
            continue;
          }
          const cur = this.ipam.allocator.get(it.rec);
          // a record only releases what existed when it was written, never a newer ADD of the same key
          if (cur && cur.createdAt <= it.rec.recordedAt) {
            this.ipam.allocator.release(it.rec);
            this.log.info({ containerId: it.rec.containerId, ifname: it.rec.ifname, address: cur.address }, 'released from spool');
          }
          done.push(it.path);
        }
        await this.store.commit();
        for (const p of done) await fs.rm(p, { force: true });
      } catch (e) {
        this.log.error({ err: (e as Error).message }, 'applying the release spool failed');
      } finally {
        this.draining = undefined;
      }
    })();
    return this.draining;
  }

  /** The mesh connections and the targets not connected, as `weft status connections` shows them. */
  connectionReports(): ConnectionReport[] {
    const nick = (n?: string) => this.mesh.topology.get(n ?? '')?.nickname;
    const connections: ConnectionReport[] = [];
    const seen = new Set<string>();
    for (const c of this.mesh.connections()) {
      if (!c.established && !c.target) continue;
      const peer = c.hello?.name;
      if (c.target) seen.add(c.target.addr);
      connections.push({
        direction: c.outbound ? 'outbound' : 'inbound',
        address: c.target?.addr ?? c.remote,
        state: c.established ? 'established' : 'connecting',
        peer,
        nickname: c.hello?.nickname,
        datapath: c.established && this.fastdp ? 'fastdp' : undefined,
        healthy: peer ? this.health.get(peer) : undefined,
        encrypted: false,
        mtu: this.mtu,
      });
    }
    for (const t of this.mesh.targetList()) {
      if (seen.has(t.addr) || t.state === 'established' || t.state === 'self') continue;
      connections.push({ direction: 'outbound', address: t.addr, state: t.error ? 'failed' : t.state === 'connecting' ? 'connecting' : 'retrying', peer: t.peer, nickname: nick(t.peer), encrypted: false, mtu: this.mtu, info: t.error });
    }
    return connections;
  }

  report(): Report {
    const all = this.ipam.allocator.list();
    const gws = all.filter((a) => a.network === GATEWAY_NETWORK);
    const pods = all.filter((a) => a.network !== GATEWAY_NETWORK).sort((a, b) => addrNum(a.address) - addrNum(b.address));
    const free = this.ipam.allocator.freeCount();
    const peers = this.mesh.peers();
    const nick = (n?: string) => peers.find((p) => p.name === n)?.nickname;
    const connections = this.connectionReports();
    const sizes = this.ipam.ring.sizes();
    const rangeSize = 2 ** (32 - this.ipam.allocator.range.prefix);
    const st = this.ipam.status();
    return {
      version: VERSION,
      router: {
        name: this.peerName,
        nickname: this.nickname,
        bridge: this.opts.bridge,
        bridgeMac: this.host.o.bridgeMac,
        mtu: this.mtu,
        socket: this.opts.socket,
        encryption: false,
        port: this.opts.port,
      },
      mesh: {
        targets: this.mesh.targetList().filter((t) => t.explicit).map((t) => t.addr),
        connections,
        peers: [...peers]
          .sort((a, b) => (a.name === this.peerName ? -1 : b.name === this.peerName ? 1 : a.nickname.localeCompare(b.nickname)))
          .map((p) => ({ name: p.name, nickname: p.nickname, uid: p.uid, connections: p.conns, reachable: p.reachable })),
      },
      ipam: {
        status: st.status,
        reason: st.reason,
        range: formatCidr(this.ipam.allocator.range),
        defaultSubnet: formatCidr(this.ipam.allocator.defaultSubnet),
        free,
        owners: [...sizes.entries()].map(([peer, size]) => ({
          peer,
          nickname: nick(peer),
          size,
          share: size / rangeSize,
          reachable: peer === this.peerName || this.mesh.isReachable(peer),
          free: peer === this.peerName ? free : (this.mesh.topology.get(peer)?.meta.ipamFree as number | undefined),
        })),
        gateways: gws.length,
        attachments: [...gws, ...pods],
      },
    };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    await this.api?.close();
    await this.mesh?.stop();
    await this.metrics?.close();
    await this.fastdp?.stopResponder();
    await fs.rm(this.opts.socket, { force: true });
    this.log.info({ peer: this.peerName }, 'router stopped');
    this.log.flush();
  }
}
