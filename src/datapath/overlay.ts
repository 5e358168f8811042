/**
 * The data path between hosts, behind one interface (after flannel's Backend/Network pair).
 *
 * Why it is this way: an overlay knows its own encapsulation overhead, so the pod MTU has one
 * owner; it is handed the peers it carries as a whole list and diffs that against the kernel
 * (level-triggered, so a restart or a lost event heals on the next call); and it reports its
 * health per peer, so the router can pick, per peer, the overlay that works (kernel VXLAN when
 * its probe passes, the routers' own UDP path otherwise or when traffic must be encrypted).
 */
import type { Startable } from '../common/lifecycle';

/** The interface, address and MTU this host is reached at by its peers (see underlay.ts). */
export interface Underlay {
  /** Interface name, e.g. eth0. */
  iface: string;
  /** IPv4 address peers send to. */
  ip: string;
  /** MTU of the interface. */
  mtu: number;
  /** How it was found: 'advertise-addr' | 'iface' | 'iface-can-reach' | 'default route' | 'route to peers'. */
  how: string;
}

/** What an overlay needs to know of one remote peer. */
export interface OverlayPeer {
  /** 48-bit peer name. */
  name: string;
  nickname?: string;
  /** Underlay address its router and VXLAN device listen on. */
  ip: string;
  /** MAC of its bridge, when published. */
  bridgeMac?: string;
  /** Its bridge's address on the pod network (the probe target), when it has one. */
  gateway?: string;
  /** Reachable through the mesh now (directly or through others). */
  reachable: boolean;
  /** Next hop towards it when there is no direct connection (mesh unicast route); undefined when direct. */
  via?: string;
}

/** An overlay's view of one peer, for `weft status connections` and metrics. */
export interface OverlayPeerStatus {
  /** 'fastdp' (kernel VXLAN) or 'sleeve' (the routers' own path). */
  overlay: string;
  /** Last probe: true works, false failed, undefined not probed yet. */
  healthy?: boolean;
  encrypted: boolean;
  /** Peer name of the next hop when relayed. */
  via?: string;
}

/**
 * One way of carrying pod traffic between hosts. The router owns one instance per kind and
 * hands each the peers it should carry; a peer moved to another overlay is simply left out of
 * the next `program` call, and the overlay removes what it had for it.
 */
export interface Overlay extends Startable {
  /** 'fastdp' | 'sleeve'. */
  readonly name: string;
  /** Bytes its encapsulation takes from the underlay MTU. */
  readonly overhead: number;
  /** Whether pod traffic on it is encrypted. */
  readonly encrypted: boolean;
  /** The largest pod MTU it carries without fragmentation loss, given the underlay. */
  podMtu(underlay: Underlay): number;
  /**
   * Makes per-peer state match `peers`, the peers this overlay carries now (reachable or within
   * its grace period). State for peers not listed is removed, except where the overlay keeps it
   * on purpose (kernel VXLAN keeps entries of unknown destinations for a grace period, so a
   * restarting router drops no traffic). Idempotent. Resolves true when it changed something
   * or has work that falls due with time (a grace period running): it is then called again
   * soon, while otherwise the periodic calls slow down (src/common/pacer.ts).
   */
  program(peers: readonly OverlayPeer[]): Promise<boolean | void>;
  /** Probes the data path to a peer; resolves within a few seconds, never rejects. */
  probe(peer: OverlayPeer): Promise<boolean>;
  /** Undefined when the overlay's devices are in place; otherwise what is wrong (for /readyz and repair). */
  verify(): Promise<string | undefined>;
  /** Creates again what `verify` found missing. */
  repair(): Promise<void>;
  /** Its own view of a peer it carries (e.g. whether that hop is sealed), when it has one. */
  status?(peer: string): OverlayPeerStatus | undefined;
}
