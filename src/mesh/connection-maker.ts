/**
 * Connection making: the addresses this router dials, why, and when next.
 *
 * Why it is this way: each peer source (flags and `weft connect`, Kubernetes Nodes) owns its
 * own set of addresses and replaces it whole; gossip adds the addresses of peers of peers. A
 * target lives while some source wants it. Failed dials back off (x1.5 from `retryMinMs` up to
 * `retryMaxMs`, with jitter); a learnt address of a peer gone for good stops being dialled.
 */
import { dialKept } from './connections';
import type { PeerTargets } from './peer-source';

/** 'idle': known, but not dialled now (the mesh is large and this peer is not a preferred neighbour). */
export type TargetState = 'connecting' | 'established' | 'retrying' | 'failed' | 'self' | 'idle';

/** The source name of addresses learnt from gossip. */
export const GOSSIP_SOURCE = 'gossip';

/** A target as `weft status targets` and the report show it. */
export interface TargetView {
  addr: string;
  state: TargetState;
  /** Wanted by a peer source (not only learnt from gossip). */
  explicit: boolean;
  sources: string[];
  error?: string;
  /** The peer found at this address last time. */
  peer?: string;
}

interface Target {
  addr: string;
  sources: Set<string>;
  state: TargetState;
  attempts: number;
  /** Dials that failed since the last success. */
  failures: number;
  nextTry: number;
  lastError?: string;
  peer?: string;
  /** Established through a connection not made for this target (the peer's, or a duplicate's winner). */
  throughOther?: boolean;
}

export interface ConnectionMakerComponents {
  /** Opens an outbound connection for target `addr` (host:port). */
  dial(addr: string, host: string, port: number): void;
  /** Room for another outbound connection now. */
  canDial(): boolean;
  connectedTo(peer: string): boolean;
  /** The peer's full state arrived here at least once since this router started. */
  heardFrom(peer: string): boolean;
  isReachable(peer: string): boolean;
  /** Whether to dial this target now (false for peers not wanted in a large mesh). */
  wanted(t: { addr: string; peer?: string; explicit: boolean }): boolean;
  /** Whether a connection from `host` is in its handshake here (it may be the peer dialling us). */
  inboundPendingFrom?(host: string): boolean;
}

export interface ConnectionMakerInit {
  defaultPort: number;
  retryMinMs: number;
  retryMaxMs: number;
  /**
   * This router's name. Of two routers that learn of each other from gossip, the one with the
   * smaller name dials at once and the other waits `deferMs` (default twice `retryMinMs`),
   * dialling only if no connection came meanwhile.
   */
  self?: string;
  deferMs?: number;
}

/** Dials that must fail in a row before a wanted target stops holding up consensus. */
export const SETTLE_FAILURES = 3;

export function splitHostPort(addr: string, defaultPort: number): { host: string; port: number } {
  const m = /^(.*?)(?::(\d+))?$/.exec(addr)!;
  return { host: m[1]!, port: m[2] ? Number(m[2]) : defaultPort };
}

export class ConnectionMaker implements PeerTargets {
  private readonly targets = new Map<string, Target>();

  constructor(
    private readonly c: ConnectionMakerComponents,
    private readonly o: ConnectionMakerInit,
  ) {}

  normalise(addr: string): string {
    const { host, port } = splitHostPort(addr, this.o.defaultPort);
    return `${host}:${port}`;
  }

  /** Replaces the addresses `source` wants; returns the targets no source wants any more. */
  setTargets(source: string, addrs: readonly string[]): string[] {
    const want = new Set(addrs.map((a) => this.normalise(a)));
    for (const a of want) this.add(a, source);
    const dropped: string[] = [];
    for (const t of this.targets.values()) {
      if (!t.sources.has(source) || want.has(t.addr)) continue;
      t.sources.delete(source);
      if (t.sources.size === 0) {
        this.targets.delete(t.addr);
        dropped.push(t.addr);
      }
    }
    return dropped;
  }

  /**
   * An address learnt from gossip, of `peer` when known. Both ends learn of each other at about
   * the same time; were both to dial, both connections would complete their handshakes and
   * their first exchanges before one was dropped as a duplicate (connections.ts keeps the one
   * the smaller name dialled: `dialKept`), and each drop is a topology change every router
   * relays. So the router whose dial would lose lets the other dial first.
   */
  learn(addr: string, peer?: string, now = Date.now()): void {
    const key = this.normalise(addr);
    if (this.targets.has(key)) return;
    this.add(key, GOSSIP_SOURCE);
    if (peer === undefined) return;
    const t = this.targets.get(key)!;
    t.peer = peer;
    if (this.o.self !== undefined && dialKept(peer, this.o.self)) t.nextTry = now + (this.o.deferMs ?? 2 * this.o.retryMinMs) * (1 + Math.random() / 4);
  }

  /** Whether `addr` is a target (`normalised`: it is in host:port form already). */
  has(addr: string, normalised = false): boolean {
    return this.targets.has(normalised ? addr : this.normalise(addr));
  }

  /** Stops dialling these addresses, whoever wanted them; returns the ones that were targets. */
  forget(addrs: readonly string[]): string[] {
    const done: string[] = [];
    for (const a of addrs) {
      const key = this.normalise(a);
      if (this.targets.delete(key)) done.push(key);
    }
    return done;
  }

  private add(addr: string, source: string): void {
    const t = this.targets.get(addr);
    if (t) {
      const wasOnlyLearnt = !this.explicit(t);
      t.sources.add(source);
      // a source asking again for a failing address: try at once
      if (source !== GOSSIP_SOURCE && (wasOnlyLearnt || t.state === 'failed') && t.state !== 'established' && t.state !== 'self') t.nextTry = 0;
      return;
    }
    this.targets.set(addr, { addr, sources: new Set([source]), state: 'retrying', attempts: 0, failures: 0, nextTry: 0 });
  }

  private explicit(t: Target): boolean {
    return [...t.sources].some((s) => s !== GOSSIP_SOURCE);
  }

  /** Dials what is due. */
  tick(now = Date.now()): void {
    for (const t of this.targets.values()) {
      // established through a connection the peer made: nothing reports that one's close here
      if (t.state === 'established' && t.throughOther && !(t.peer && this.c.connectedTo(t.peer))) {
        t.state = 'retrying';
        t.throughOther = false;
        t.nextTry = now + this.o.retryMinMs * Math.random();
      }
      if (t.state === 'self' || t.state === 'connecting' || t.state === 'established') continue;
      if (t.peer && this.c.connectedTo(t.peer)) {
        t.state = 'established';
        t.throughOther = true;
        continue;
      }
      // a learnt address of a peer that went away is not worth dialling forever
      if (!this.explicit(t) && t.peer && !this.c.isReachable(t.peer) && t.attempts > 8) {
        this.targets.delete(t.addr);
        continue;
      }
      if (!this.c.wanted({ addr: t.addr, peer: t.peer, explicit: this.explicit(t) })) {
        t.state = 'idle';
        continue;
      }
      if (t.state === 'idle') t.state = 'retrying';
      if (t.nextTry > now || !this.c.canDial()) continue;
      // the peer is dialling us already (its hello not yet read): dialling too makes a duplicate,
      // and one of the two ends then drops one connection (its handshake and first exchange
      // wasted, each drop a topology change every router relays). On a busy host a handshake
      // can outlast the wait of the side that defers, and the other side may learn late
      const { host, port } = splitHostPort(t.addr, this.o.defaultPort);
      if (!this.explicit(t) && this.c.inboundPendingFrom?.(host)) continue;
      t.state = 'connecting';
      t.attempts++;
      this.c.dial(t.addr, host, port);
    }
  }

  /** A connection for `addr` completed its handshake with `peer`. */
  established(addr: string, peer: string): void {
    const t = this.targets.get(addr);
    if (!t) return;
    t.state = 'established';
    t.throughOther = false;
    t.peer = peer;
    t.attempts = 0;
    t.failures = 0;
    t.lastError = undefined;
  }

  /** The hello at `addr` came from `peer` (known even when the connection is then dropped as a duplicate). */
  identified(addr: string, peer: string): void {
    const t = this.targets.get(addr);
    if (t) t.peer = peer;
  }

  /** The address is this router itself: never dialled again. */
  isSelf(addr: string): void {
    const t = this.targets.get(addr);
    if (t) t.state = 'self';
  }

  /**
   * A connection for `addr` closed. A duplicate that lost to another connection to the same
   * peer is `quiet`: no error, and the target stays established through the other one.
   */
  closed(addr: string, reason: string, quiet: boolean): void {
    const t = this.targets.get(addr);
    if (!t || t.state === 'self') return;
    if (t.peer && this.c.connectedTo(t.peer)) {
      t.state = 'established';
      t.throughOther = true;
      return;
    }
    if (!quiet) {
      t.lastError = reason;
      t.failures++;
    }
    const base = Math.min(this.o.retryMaxMs, this.o.retryMinMs * 1.5 ** Math.max(0, t.attempts - 1));
    t.nextTry = Date.now() + base * (0.75 + Math.random() * 0.5);
    t.state = 'retrying';
  }

  /** How many targets some peer source wants (not only learnt from gossip). */
  explicitCount(): number {
    let n = 0;
    for (const t of this.targets.values()) if (this.explicit(t)) n++;
    return n;
  }

  list(): TargetView[] {
    return [...this.targets.values()].map((t) => ({
      addr: t.addr,
      state: t.state,
      explicit: this.explicit(t),
      sources: [...t.sources].sort(),
      error: t.lastError,
      peer: t.peer,
    }));
  }

  /**
   * Whether this router has heard from every peer it was told to connect to: each such target
   * is itself, connected with the peer's full state received, or has failed `SETTLE_FAILURES`
   * dials in a row. Until then it must not take part in deciding the first IPAM ring: a peer it
   * was pointed at may already have one.
   */
  settled(): { settled: boolean; waitingFor: string[] } {
    const waitingFor = [...this.targets.values()]
      .filter((t) => this.explicit(t) && t.state !== 'self' && t.state !== 'idle' && t.failures < SETTLE_FAILURES && !(t.peer && this.c.heardFrom(t.peer)))
      .map((t) => t.addr);
    return { settled: waitingFor.length === 0, waitingFor };
  }
}
