/** The sandbox's shapes: what `up`, `pingMatrix`, `status` and `down` return, and its names. */
import { join } from 'node:path';
import { WeftError } from '../common/errors';
import type { Report } from '../router/report';
import type { Termination } from '../sys/process';
import type { NeighSizing, NeighValues } from './neigh';
import type { HostRecord, PodRecord, SandboxState } from './state';

export const NETNS_DIR = '/var/run/netns';
export const UNDERLAY_BRIDGE = 'br0';
export const HOST_IFNAME = 'eth0';
export const POD_IFNAME = 'eth0';
export const METRICS_ADDR = '127.0.0.1:6782';
export const CNI_NETWORK = 'weft';

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
  /** The machine-wide neighbour table limits, as they were and as the sandbox set them. */
  neigh?: NeighSizing;
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
  /** The neighbour table limits after this sandbox gave back its share (undefined: it had none). */
  neigh?: NeighValues;
}

export interface SandboxOpenOptions {
  /** Namespace name prefix (default wsb). */
  prefix?: string;
  /** Directory for the state file, router state, sockets and logs (default /run/weft-sandbox/<prefix>). */
  dir?: string;
  /** Progress lines. */
  log?: (line: string) => void;
}

export const netnsPath = (name: string) => join(NETNS_DIR, name);
export const stripPrefixLen = (cidr: string | undefined) => cidr?.split('/')[0];
