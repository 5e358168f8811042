/**
 * The router daemon's composition root: it builds the parts, each with the components it
 * declares, starts them in order and stops them in reverse. No part reaches into another.
 *
 * Stopping leaves the bridge, veths, VXLAN device and rules in place, so pods keep working and
 * keep talking across hosts while the router is down.
 */
import { promises as fs } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { ConfigError } from '../common/errors';
import { contains, formatCidr, parseCidr, parseIPv4 } from '../common/ip';
import type { Startable } from '../common/lifecycle';
import { createLogger, type Logger } from '../common/log';
import { BridgeAddresses } from '../datapath/bridge-addrs';
import { DataPath } from '../datapath/datapath';
import { FastDp, VXLAN_DEV } from '../datapath/fastdp';
import { HostNetwork } from '../datapath/host';
import { Prober } from '../datapath/probe';
import { UnderlayFinder } from '../datapath/underlay';
import type { Underlay } from '../datapath/overlay';
import { GATEWAY_NETWORK } from '../ipam/allocator';
import { IpamService, type IpamFile } from '../ipam/service';
import { JsonStore } from '../ipam/store';
import { Mesh } from '../mesh/mesh';
import { StaticPeerSource } from '../mesh/peer-source';
import { derivedMac, loadPeerName } from '../mesh/peername';
import { detectBackend, Iptables } from '../sys/iptables';
import { KernelWatch } from '../sys/monitor';
import { fdbView } from '../sys/fdb';
import { sharedReads } from '../sys/shared-reads';
import { KubeMode } from '../kube/mode';
import { kubeModeWanted } from '../kube/client';
import type { PeerSource } from '../mesh/peer-source';
import { ControlApi } from './control-api';
import { ApiServer } from './http';
import { IpamApi } from './ipam-api';
import { Metrics } from './metrics';
import type { RouterConfig } from './options';
import { registerPolicyApi, RouterPolicy } from './policy';
import { OrphanReclaim, Repair } from './repair';
import { buildReport, buildSummary, connectionReports } from './report';
import { SpoolDrainer } from './spool';
import { PodLinks } from '../datapath/pod-links';
import { WarmIp } from '../sys/warm';
import { CniApi } from './cni-api';
import { derivePsk } from '../crypto/handshake';
import { SleeveOverlay } from '../datapath/sleeve/sleeve';
import { SLEEVE_VXLAN_DEV } from '../datapath/sleeve/kernel';
import { peerLinks } from '../mesh/peer-links';

export const VERSION = '0.1.0';

/** Devices weft makes itself: never the underlay. */
const ownDevice = (bridge: string) => (ifname: string) => ifname === bridge || ifname === VXLAN_DEV || ifname.startsWith('vethwe') || ifname === SLEEVE_VXLAN_DEV || ifname.startsWith('sleeve-via');

/**
 * Opens the state files; an IPAM state of another range is refused, naming the flag. With
 * `wipe` (Kubernetes mode: this peer's space was reclaimed) what is on disk is not used.
 */
async function openStores(o: RouterConfig, wipe: boolean, ipamSnapshot: () => IpamFile, exposeSnapshot: () => { exposed: string[] }) {
  const ipam = await JsonStore.open<IpamFile>(o.stateDir, 'ipam.json', ipamSnapshot);
  const exposed = await JsonStore.open<{ exposed: string[] }>(o.stateDir, 'expose.json', exposeSnapshot);
  if (wipe) return { ipam: { ...ipam, data: undefined }, exposed: { ...exposed, data: undefined } };
  if (ipam.data && ipam.data.range !== formatCidr(o.range)) {
    throw new ConfigError(
      '--ipalloc-range',
      `${o.ipallocRange} differs from ${ipam.data.range} recorded in ${ipam.store.path}; pods still hold addresses from it. Start with --ipalloc-range ${ipam.data.range}, or remove the file once no pod uses it`,
    );
  }
  return { ipam, exposed };
}

export class Router {
  readonly log: Logger;
  private readonly started: Startable[] = [];

  /** `fatal`: the router cannot go on as it is and must be restarted (its state was reclaimed). */
  constructor(
    readonly o: RouterConfig,
    private readonly fatal: (why: string) => void = () => undefined,
  ) {
    this.log = createLogger({ name: 'weft-router', level: o.logLevel, file: o.logFile });
  }

  private async up<T extends Startable>(part: T): Promise<T> {
    await part.start();
    this.started.push(part);
    return part;
  }

  /** Builds every part (constructors do no I/O on the network), then starts them in order. */
  async start(): Promise<void> {
    const o = this.o;
    const t = o.timings;
    // encryption (issue 8): the password stretched once; every mesh connection and the sleeve use it
    const psk = o.password !== undefined ? derivePsk(o.password) : undefined;
    const trusted = (o.trustedSubnets ?? []).map((c) => parseCidr(c)!);
    const log = this.log;
    const child = (component: string) => log.child({ component });
    const nickname = o.nickname ?? hostname();
    const metrics = new Metrics();

    await fs.mkdir(o.stateDir, { recursive: true, mode: 0o700 });
    const self = { name: await loadPeerName(o.stateDir, o.name), nickname, uid: randomBytes(8).toString('hex') };
    const bridgeMac = derivedMac(`${self.name}/${o.bridge}`);

    // Kubernetes mode: the Node list first; whether the state on disk is still ours, and how a ring starts
    const kube = kubeModeWanted({ kubeconfig: o.kubeconfig }) ? await KubeMode.connect({ kubeconfig: o.kubeconfig, nodeName: o.nodeName, log }) : undefined;
    if (kube) this.started.push({ start: async () => undefined, stop: () => kube.stop() });
    const decided = await kube?.prepare(self.name, o.ipallocInit !== undefined ? o.init : undefined);
    const wipe = decided?.state.decision === 'wipe';

    const mesh = new Mesh(
      { self, log: child('mesh'), traffic: (d, k, b) => metrics.traffic(d, k, b) },
      {
        port: o.port,
        listenAddr: o.advertiseAddr ?? '0.0.0.0',
        advertise: o.advertiseAddr ? `${o.advertiseAddr}:${o.port}` : undefined,
        heartbeatMs: t.heartbeatMs,
        refreshMs: t.refreshMs,
        retryMinMs: t.retryMinMs,
        retryMaxMs: t.retryMaxMs,
        handshakeMs: t.handshakeMs,
        maxConnections: o.connLimit,
        maxPending: 64,
        maxPendingPerHost: 16,
        psk,
      },
    );
    const staticPeers = new StaticPeerSource({ targets: mesh, normalise: (a) => mesh.normalise(a) }, o.peers);
    const peerSources: PeerSource[] = [staticPeers, ...(kube ? [kube.peerSource(mesh)] : [])];

    const stores = await openStores(o, wipe, () => ipam.snapshot(), () => ({ exposed }));
    let exposed = stores.exposed.data?.exposed ?? [];
    const commit = () => stores.ipam.store.commit();
    const ipam: IpamService = new IpamService(
      {
        self: self.name,
        mesh: {
          channel: (n, g) => mesh.channel(n, g),
          send: (to, ty, b) => mesh.send(to, ty, b),
          onMessage: (ty, h) => mesh.onMessage(ty, h),
          isReachable: (p) => mesh.isReachable(p),
          settled: () => mesh.settled(),
          watch: (fn) => {
            mesh.events.on('reachability', fn);
            mesh.events.on('synced', fn);
          },
        },
        log: child('ipam'),
        commit,
      },
      { range: o.range, defaultSubnet: o.defaultSubnet, init: decided?.bootstrap.init ?? o.init, spaceTimeoutMs: t.spaceTimeoutMs },
    );
    if (stores.ipam.data) ipam.load(stores.ipam.data);
    if (wipe) {
      log.warn({ why: decided!.state.reason }, 'starting with empty IPAM state: this peer\'s space belongs to others now');
      await commit();
      await stores.exposed.store.commit();
    }

    const underlay = new UnderlayFinder(
      // the flags' peers from the start (sources start after the underlay), then every source's
      { log: child('underlay'), peers: () => [...new Set([...o.peers, ...mesh.targetList().filter((t) => t.explicit).map((t) => t.addr)])] },
      { advertiseAddr: o.advertiseAddr, iface: o.iface, ifaceCanReach: o.ifaceCanReach, ownDevices: ownDevice(o.bridge), retryMs: t.underlayRetryMs },
    );
    const prober = new Prober({
      log: child('probe'),
      mac: derivedMac(`${self.name}/probe`),
      peer: (gw) => {
        const p = mesh.peers().find((x) => x.meta.gateway === gw && x.name !== self.name);
        return p?.meta.underlay ? { ip: p.meta.underlay, bridgeMac: p.meta.bridgeMac } : undefined;
      },
    });
    const iptables = new Iptables(await detectBackend());
    // the kernel's change reports let the periodic passes rest while nothing changes (rules only on nf_tables)
    const fdbDevices = [VXLAN_DEV, SLEEVE_VXLAN_DEV];
    const watch = new KernelWatch({ log: child('watch') }, { rules: iptables.backend === 'nft', fdbDevices });
    fdbView.watch(fdbDevices);
    // the sleeve: the routers' own path, sealed with a secret, relayed where there is no direct connection
    const links = peerLinks(mesh, 'sleeve');
    let sleeve: SleeveOverlay | undefined;
    const dataPath: DataPath = new DataPath(
      {
        self: self.name,
        mesh,
        overlays: (u) => [
          // with a secret nothing unencrypted crosses the underlay: kernel VXLAN only between hosts inside the trusted subnets, and only from them
          ...(psk && !trusted.some((c) => contains(c, parseIPv4(u.ip) ?? -1))
            ? []
            : [new FastDp({ bridge: o.bridge, underlay: u, podMtu: () => dataPath.podMtu, prober, iptables, log: child('fastdp') }, { graceMs: t.peerGraceMs, acceptFrom: psk ? trusted.map(formatCidr) : undefined })]),
          (sleeve = new SleeveOverlay({ ...links, iptables, log: child('sleeve') }, { self: self.name, bridge: o.bridge, encrypted: !!psk, trustedSubnets: o.trustedSubnets, localIp: u.ip, port: o.port, carrier: o.sleeveCarrier, streamPort: o.port + 4 })),
        ],
        watching: () => watch.watching,
        log: child('datapath'),
      },
      { mtu: o.mtu, programMs: t.programMs, idleMs: t.idlePassMs, probeMs: t.probeMs, encrypted: !!psk, trusted },
    );
    metrics.sleeve(() => sleeve?.counters);
    const host = new HostNetwork({ bridge: o.bridge, bridgeMac, mtu: () => dataPath.podMtu, range: o.range, masquerade: o.masquerade, iptables, log });
    const bridge = new BridgeAddresses({
      bridge: o.bridge,
      ipam: { allocate: (k, s, e, x) => ipam.allocate(k, s, e, x), list: () => ipam.allocator.list(), defaultSubnet: o.defaultSubnet },
      commit,
      exposed: {
        list: () => [...exposed],
        save: async (list) => {
          exposed = [...list];
          await stores.exposed.store.commit();
        },
      },
      onGateway: (ip) => {
        mesh.publish({ gateway: ip });
        policy?.kick();
        void prober.listen(ip).catch((e) => log.warn({ err: (e as Error).message }, 'probe socket'));
      },
      log,
    });
    const spool = new SpoolDrainer({ allocations: ipam.allocator, commit, log }, { stateDir: o.stateDir, socket: o.socket, everyMs: t.spoolMs });
    const report = () =>
      buildReport({
        version: VERSION,
        router: { name: self.name, nickname, bridge: o.bridge, bridgeMac, socket: o.socket, encryption: !!psk, trustedSubnets: o.trustedSubnets ?? [], port: o.port, peerSources: peerSources.map((p) => p.describe()) },
        kubernetes: kube?.status(),
        mesh,
        ipam,
        dataPath,
        underlay,
      });
    const warmIp = new WarmIp();
    const podLinks = new PodLinks({ ip: warmIp, attachments: () => ipam.allocator.list(), log: child('pods') });
    // NetworkPolicy, in Kubernetes mode only: Pods, Namespaces, NetworkPolicies from the API, enforced on the bridge
    const policy = kube && new RouterPolicy(
      { client: kube.client, attachments: () => ipam.allocator.list(), exposed: () => exposed, log: child('policy'), enforced: (s) => metrics.policyEnforced(s) },
      { exempt: o.serviceCidr },
    );
    if (policy) metrics.policy(() => policy.dropDeltas());
    const api = new ApiServer(log);
    registerPolicyApi(api, policy);
    new IpamApi({
      ipam,
      commit,
      bridge: { name: o.bridge, ensure: () => host.ensureBridge() },
      gateways: bridge,
      mtu: () => dataPath.podMtu,
      log,
      observe: (op, r, s) => (metrics.request(op, r, s), policy?.kick()),
    }).register(api);
    new ControlApi({
      report,
      summary: () => buildSummary({ mesh, ipam }),
      staticPeers,
      mesh,
      ipam: { rmpeer: (p) => ipam.rmpeer(p), owners: () => ipam.ring.sizes().keys(), status: () => ipam.status() },
      bridge,
      reprogram: () => dataPath.schedule(),
    }).register(api);
    // the CNI verbs' netlink work, done here through warm `ip` processes (issue 11)
    new CniApi({ ipam, commit, bridge: { name: o.bridge, ensure: () => host.ensureBridge() }, gateways: bridge, links: podLinks, mtu: () => dataPath.podMtu, log, observe: (op, r, s) => (metrics.request(op, r, s), policy?.kick()) }).register(api);

    // events between parts
    const useUnderlay = async (u: Underlay) => {
      mesh.publish({ underlay: u.ip });
      if (!o.advertiseAddr) mesh.setAdvertise(`${u.ip}:${o.port}`);
      await dataPath.useUnderlay(u);
    };
    underlay.events.on('found', (u) => void useUnderlay(u).catch((e) => log.error({ err: (e as Error).message }, 'starting the data path')));
    mesh.events.on('connection', (_peer, local) => void underlay.learn(local));
    mesh.events.on('topology', () => dataPath.schedule());
    dataPath.events.on('mtu', (mtu) => void host.setMtu(mtu).catch((e) => log.error({ err: (e as Error).message }, 'setting the bridge MTU')));
    mesh.publish({ bridgeMac });

    // metrics and health first, so /readyz can say what is not there yet
    metrics.gauges({
      connections: () => connectionReports({ mesh, dataPath }),
      peers: () => mesh.peers().length,
      ips: () => ({ used: ipam.allocator.list().filter((a) => a.network !== GATEWAY_NETWORK).length, available: ipam.allocator.freeCount() }),
      unreachableShare: () => unreachableShare(ipam, mesh, self.name),
      pendingAllocations: () => ipam.pendingAllocations,
    });
    await metrics.listen(o.metricsAddr, () => sharedReads(() => readiness({ host, dataPath, ipam, underlay, policy })), log);
    this.started.push({ start: async () => undefined, stop: () => metrics.close() });

    // the host network: the bridge and rules, then whatever a recreated bridge lost
    await host.setup();
    await bridge.restore();
    await this.up(underlay);
    if (underlay.underlay) await useUnderlay(underlay.underlay);
    watch.onChange((c) => {
      fdbView.feed(c);
      dataPath.poke();
    });
    await this.up(watch);
    await this.up(dataPath);
    await this.up(mesh);
    for (const src of peerSources) await this.up(src);
    await this.up(ipam);
    if (kube) {
      const reclaimer = await this.up(
        kube.reclaimer({
          self: self.name,
          ipam: { rmpeer: (p) => ipam.rmpeer(p), ringReady: () => ipam.ring.initialised() },
          mesh,
          onSelfReclaimed: (by) => this.fatal(`this peer's space was reclaimed by ${by} (its Node was deleted); restarting with empty state`),
        }),
      );
      const onRing = () => ipam.ring.initialised() && (ipam.off('change', onRing), reclaimer.kick());
      ipam.on('change', onRing);
      onRing();
    }
    await this.up(spool);
    await this.up(warmIp);
    await this.up(podLinks);
    // allocations whose pod is gone (a reboot, a pod removed while the router was down) are released before the API serves
    await this.up(new OrphanReclaim({ allocations: ipam.allocator, links: podLinks, commit, log: child('reclaim') }, { graceMs: t.orphanGraceMs }));
    await api.listen(o.socket);
    this.started.push({ start: async () => undefined, stop: () => api.close() });
    this.started.push({ start: async () => undefined, stop: () => prober.stop() });
    await spool.publishStateDir();
    await this.up(bridge);
    if (policy) await this.up(policy);
    await this.up(new Repair({ host, bridge, dataPath, sharedReads, watch, log }, { everyMs: t.programMs, idleMs: t.idlePassMs }));
    if (kube) await this.up(new WhenReady(() => sharedReads(() => readiness({ host, dataPath, ipam, underlay })), () => void kube.condition().dataPathReady(), 1000));
    log.info(
      { peer: self.name, nickname, socket: o.socket, range: formatCidr(o.range), mtu: dataPath.podMtu, underlay: underlay.underlay, allocations: ipam.allocator.list().length },
      'router started',
    );
  }

  async stop(): Promise<void> {
    for (const p of this.started.splice(0).reverse()) {
      await p.stop().catch((e) => this.log.warn({ err: (e as Error).message }, 'stopping a part'));
    }
    await fs.rm(this.o.socket, { force: true });
    this.log.info({}, 'router stopped');
    this.log.flush();
  }
}

/** Calls `onReady` once `check` first finds nothing missing (a Node's NetworkUnavailable=False). */
class WhenReady implements Startable {
  private timer: NodeJS.Timeout | undefined;
  constructor(
    private readonly check: () => Promise<string[]>,
    private readonly onReady: () => void,
    private readonly everyMs: number,
  ) {}
  async start(): Promise<void> {
    this.timer = setInterval(() => {
      void this.check().then((missing) => {
        if (missing.length || !this.timer) return;
        clearInterval(this.timer);
        this.timer = undefined;
        this.onReady();
      });
    }, this.everyMs);
    this.timer.unref();
  }
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}

/** What is missing for this host to serve pods; empty when ready. */
async function readiness(p: {
  host: HostNetwork;
  dataPath: DataPath;
  ipam: IpamService;
  underlay: UnderlayFinder;
  policy?: RouterPolicy;
}): Promise<string[]> {
  const st = p.ipam.status();
  const dp = (await p.dataPath.verify()).map((w) => (p.underlay.underlay ? w : `${w}: ${p.underlay.reason}`));
  return [
    await p.host.verify(),
    await p.host.verifyRules(),
    ...dp,
    st.status === 'ready' ? undefined : `IPAM cannot allocate: ${st.status}${st.reason ? ` (${st.reason})` : ''}`,
    ...((await p.policy?.readiness()) ?? []),
  ].filter((x): x is string => !!x);
}

/** Share of the range owned by peers this router cannot reach. */
function unreachableShare(ipam: IpamService, mesh: Mesh, self: string): number {
  const total = 2 ** (32 - ipam.allocator.range.prefix);
  let lost = 0;
  for (const [peer, size] of ipam.ring.sizes()) if (peer !== self && !mesh.isReachable(peer)) lost += size;
  return lost / total;
}
