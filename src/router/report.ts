/** GET /v1/report: the router's complete state, the source of `weft status`, `weft ps` and `weft report`. */
import type { AllocationRecord } from '../common/api';
import { formatCidr, parseAddrWithPrefix } from '../common/ip';
import type { OverlayPeerStatus, Underlay } from '../datapath/overlay';
import { GATEWAY_NETWORK } from '../ipam/allocator';
import type { IpamService } from '../ipam/service';
import type { TargetView } from '../mesh/connection-maker';
import type { ConnectionView } from '../mesh/mesh';
import type { PeerView } from '../mesh/topology';
import { processesStarted } from '../sys/spawn';
import { byText } from '../common/order';

/** A connection to a peer as this router sees it. */
export interface ConnectionReport {
  /** 'outbound' when this router dialled it. */
  direction: 'outbound' | 'inbound';
  /** ip:port of the far end. */
  address: string;
  state: 'connecting' | 'established' | 'failed' | 'retrying';
  /** Peer name and nickname, once the handshake told them. */
  peer?: string;
  nickname?: string;
  /** Data path to that peer: 'fastdp' (kernel VXLAN) or 'sleeve' (the routers' own), once programmed. */
  datapath?: string;
  /** Peer name of the next hop when the data path is relayed. */
  via?: string;
  /** Result of the last data-path health probe: true works, false failed, undefined not probed yet. */
  healthy?: boolean;
  encrypted: boolean;
  mtu: number;
  /** Why it failed, for 'failed' and 'retrying'. */
  info?: string;
}

export interface PeerReport {
  name: string;
  nickname: string;
  uid: string;
  /** Names of the peers it has established connections to. */
  connections: string[];
  /** Reachable from this router through the mesh. */
  reachable: boolean;
}

export interface OwnerReport {
  peer: string;
  nickname?: string;
  /** Addresses of the range this peer owns. */
  size: number;
  /** Share of the range, 0..1. */
  share: number;
  reachable: boolean;
  /** Free addresses it reports. */
  free?: number;
}

/** Kubernetes mode, as `weft status` shows it. */
export interface KubeReport {
  /** "kubernetes: 5 nodes". */
  source: string;
  nodeName: string;
  /** The last takeover of a deleted Node's space the record shows, by any router. */
  lastReclaim?: { peer: string; node: string; by: string; byNode?: string; at: string; addresses: number; previousHolder?: string };
  /** Takeovers in progress. */
  claims: number;
  /** Peers in the record. */
  peers: number;
}

/** Field names are stable: scripts read them. */
export interface Report {
  version: string;
  /** Present in Kubernetes mode. */
  kubernetes?: KubeReport;
  router: {
    /** 48-bit peer name, MAC notation. */
    name: string;
    nickname: string;
    bridge: string;
    bridgeMac: string;
    mtu: number;
    socket: string;
    encryption: boolean;
    /** --trusted-subnets: peers inside skip data-path encryption. */
    trustedSubnets: string[];
    port: number;
    /** The interface and address peers reach this host at; absent while none was found. */
    underlay?: Underlay;
    /** 'ok', or why there is no data path to other hosts. */
    dataPath: string;
    /** Where peers come from, one line each (e.g. "flags: 2 addresses"). */
    peerSources: string[];
    /** Processes this router has started since it began, by command (ip, nsenter, sh, ...). */
    processesStarted: Record<string, number>;
  };
  mesh: {
    /** Addresses this router keeps trying to connect to. */
    targets: string[];
    connections: ConnectionReport[];
    /** Every peer known, this router first. */
    peers: PeerReport[];
  };
  ipam: {
    /** 'ready' | 'awaiting consensus' | 'no space' | 'observer' | 'all ranges owned by unreachable peers' */
    status: string;
    /** Detail for a status other than ready (quorum, known peers, ...). */
    reason?: string;
    range: string;
    defaultSubnet: string;
    free: number;
    owners: OwnerReport[];
    /** Number of entries in `attachments` that are the bridge's own gateway addresses. */
    gateways: number;
    /** Bridge gateway addresses first, then pods by address. */
    attachments: AllocationRecord[];
  };
}

/**
 * GET /v1/summary: the counts a watcher polls for (`weft sandbox up` waiting for the mesh, the
 * bench), without building the whole report (at 32 peers the report is ~33 KiB and most of a
 * millisecond of the router's time). Field names are stable.
 */
export interface Summary {
  /** Peers known, this router included. */
  peers: number;
  /** Of those, reachable through the mesh (this router included). */
  reachable: number;
  /** Established mesh connections. */
  established: number;
  /** As `ipam.status` of the report. */
  ipam: string;
}

/** The summary from the same sources as the report. */
export function buildSummary(s: Pick<ReportSources, 'mesh' | 'ipam'>): Summary {
  const peers = s.mesh.peers();
  return {
    peers: peers.length,
    reachable: peers.filter((p) => p.reachable).length,
    established: s.mesh.connections().filter((c) => c.established).length,
    ipam: s.ipam.status().status,
  };
}

/** What the report reads, each part through what it offers. */
export interface ReportSources {
  version: string;
  router: Omit<Report['router'], 'dataPath' | 'underlay' | 'mtu' | 'processesStarted'>;
  mesh: { peers(): PeerView[]; connections(): ConnectionView[]; targetList(): TargetView[]; isReachable(peer: string): boolean };
  ipam: Pick<IpamService, 'allocator' | 'ring' | 'status' | 'freeOf'>;
  dataPath: { podMtu: number; peerStatus(peer: string): OverlayPeerStatus | undefined };
  underlay: { underlay?: Underlay; reason: string };
  kubernetes?: KubeReport;
}

const addrNum = (a: string) => parseAddrWithPrefix(a)?.addr ?? 0;

/** The mesh connections and the targets not connected, as `weft status connections` shows them. */
export function connectionReports(s: Pick<ReportSources, 'mesh' | 'dataPath'>): ConnectionReport[] {
  const nick = new Map(s.mesh.peers().map((p) => [p.name, p.nickname]));
  const mtu = s.dataPath.podMtu;
  const out: ConnectionReport[] = [];
  const seen = new Set<string>();
  const targets = s.mesh.targetList();
  const peerAt = new Map(targets.map((t) => [t.addr, t.peer]));
  for (const c of s.mesh.connections()) {
    if (!c.established && !c.target) continue;
    if (c.target) seen.add(c.target);
    // a target being dialled again may still be reached through others: its data path shows
    const peer = c.peer ?? (c.target ? peerAt.get(c.target) : undefined);
    const dp = peer ? s.dataPath.peerStatus(peer) : undefined;
    out.push({
      direction: c.outbound ? 'outbound' : 'inbound',
      address: c.target ?? c.remote,
      state: c.established ? 'established' : 'connecting',
      peer,
      nickname: c.nickname,
      datapath: dp?.overlay,
      via: dp?.via,
      healthy: dp?.healthy,
      // the data path's, once programmed (a trusted peer's is plain); the control channel's before
      encrypted: dp?.encrypted ?? c.encrypted,
      mtu,
    });
  }
  const connected = new Set(s.mesh.connections().filter((c) => c.established && c.peer).map((c) => c.peer));
  for (const t of targets) {
    // 'established' through an inbound connection stays so after that connection closed (the
    // connection maker is told only of its own dials): show it while its peer is not connected
    if (seen.has(t.addr) || t.state === 'self' || (t.state === 'established' && (!t.peer || connected.has(t.peer)))) continue;
    // a peer reached through others (multi-hop) still has a data path: `sleeve via PEER`
    const dp = t.peer ? s.dataPath.peerStatus(t.peer) : undefined;
    out.push({
      direction: 'outbound',
      address: t.addr,
      state: t.error ? 'failed' : t.state === 'connecting' ? 'connecting' : 'retrying',
      peer: t.peer,
      nickname: t.peer ? nick.get(t.peer) : undefined,
      datapath: dp?.overlay,
      via: dp?.via,
      healthy: dp?.healthy,
      encrypted: dp?.encrypted ?? false,
      mtu,
      info: t.error,
    });
  }
  return out;
}

export function buildReport(s: ReportSources): Report {
  const { allocator, ring } = s.ipam;
  const all = allocator.list();
  const gws = all.filter((a) => a.network === GATEWAY_NETWORK);
  const pods = all.filter((a) => a.network !== GATEWAY_NETWORK).sort((a, b) => addrNum(a.address) - addrNum(b.address));
  const self = s.router.name;
  const peers = s.mesh.peers();
  const nick = (n?: string) => peers.find((p) => p.name === n)?.nickname;
  const rangeSize = 2 ** (32 - allocator.range.prefix);
  const st = s.ipam.status();
  return {
    version: s.version,
    ...(s.kubernetes ? { kubernetes: s.kubernetes } : {}),
    router: { ...s.router, processesStarted: processesStarted(), mtu: s.dataPath.podMtu, underlay: s.underlay.underlay, dataPath: s.underlay.underlay ? 'ok' : `no underlay: ${s.underlay.reason}` },
    mesh: {
      targets: s.mesh.targetList().filter((t) => t.explicit).map((t) => t.addr),
      connections: connectionReports(s),
      peers: [...peers]
        .sort((a, b) => (a.name === self ? -1 : b.name === self ? 1 : byText(a.nickname, b.nickname)))
        .map((p) => ({ name: p.name, nickname: p.nickname, uid: p.uid, connections: p.conns, reachable: p.reachable })),
    },
    ipam: {
      status: st.status,
      reason: st.reason,
      range: formatCidr(allocator.range),
      defaultSubnet: formatCidr(allocator.defaultSubnet),
      free: allocator.freeCount(),
      owners: [...ring.sizes().entries()].map(([peer, size]) => ({
        peer,
        nickname: nick(peer),
        size,
        share: size / rangeSize,
        reachable: peer === self || s.mesh.isReachable(peer),
        free: s.ipam.freeOf(peer),
      })),
      gateways: gws.length,
      attachments: [...gws, ...pods],
    },
  };
}
