/** The mesh's contract: what it takes (components, settings) and what it tells (events, connection views). */
import type { Logger } from '../common/log';
import type { SelfIdentity } from './connection';
import type { MeshTransport } from './transport';

export interface MeshComponents {
  self: SelfIdentity;
  log: Logger;
  /** Counts frames and bytes for metrics. */
  traffic?: (dir: 'in' | 'out', kind: string, bytes: number) => void;
  transport?: MeshTransport;
}

export interface MeshInit {
  port: number;
  /** Address to listen on (default all). */
  listenAddr?: string;
  /** ip:port this router is reached at, published to peers (may be set later). */
  advertise?: string;
  /** Heartbeat interval; a connection silent for three intervals is dropped. */
  heartbeatMs: number;
  /** Full-state gossip interval. */
  refreshMs: number;
  retryMinMs: number;
  retryMaxMs: number;
  /** How long a connection may take to complete its handshake. */
  handshakeMs: number;
  /** Established connections at most. */
  maxConnections: number;
  /** Connections still in their handshake at most, and per remote host. */
  maxPending: number;
  maxPendingPerHost: number;
  /** Pre-shared key from the password: every connection is sealed and only peers holding it get in. */
  psk?: Buffer;
  /** Up to this many peers the mesh is full; beyond, each router keeps its preferred neighbours (default 100). */
  fullMeshUpTo?: number;
  /** In a large mesh, how long a connection lives before it may be dropped as not preferred (default 10 s). */
  pruneAfterMs?: number;
}

export interface MeshEvents {
  /** The topology changed (any entry). */
  topology: [];
  /** The set of reachable peers changed. */
  reachability: [reachable: ReadonlySet<string>];
  /** A connection completed its handshake; `local` is this side's address on it. */
  connection: [peer: string, local: string | undefined];
  disconnection: [peer: string | undefined];
  /** A peer's full state arrived. */
  synced: [peer: string];
}

/** A connection as status and the report see it. */
export interface ConnectionView {
  outbound: boolean;
  remote: string;
  target?: string;
  established: boolean;
  peer?: string;
  nickname?: string;
  /** Frames are sealed (both ends hold the secret). */
  encrypted: boolean;
}
