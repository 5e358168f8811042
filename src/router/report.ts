/** GET /v1/report: the router's complete state, the source of `weft status`, `weft ps` and `weft report`. */
import type { AllocationRecord } from '../common/api';

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
  /** Data path to that peer: 'fastdp' (kernel VXLAN) when programmed. */
  datapath?: 'fastdp';
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

/** Field names are stable: scripts read them. */
export interface Report {
  version: string;
  router: {
    /** 48-bit peer name, MAC notation. */
    name: string;
    nickname: string;
    bridge: string;
    bridgeMac: string;
    mtu: number;
    socket: string;
    encryption: boolean;
    port: number;
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
