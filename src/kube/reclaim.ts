/**
 * Reclaim of a deleted Node's address space, exactly once.
 *
 * Why it is this way (Weave's users lost ranges to "unreachable!" peers for years): when a
 * Node goes, every router sees it at once, and any of them may die at any moment. So a
 * reclaim is a small transaction on the peer record (record.ts), each step a compare-and-swap:
 *   1. claim: put a lock on the dead peer naming this router, valid for a lease; a live
 *      claim of another router means "busy", an expired one is taken over (its holder died);
 *   2. take over: IPAM's rmpeer (which refuses while the peer is reachable);
 *   3. finish: remove the peer and the claim, add a tombstone and `lastReclaim`, in one write.
 * Only the claim's holder calls rmpeer, and the claim is checked again right before it, so
 * with live routers exactly one takes the space; a holder that dies leaves a claim that
 * expires and another router finishes the job (its rmpeer then finds the space already moved,
 * or moves it). A restarted router whose peer carries a tombstone (or a claim) must start with
 * empty IPAM state: `registerAndDecide` tells the composition root before IPAM loads.
 */
import { Timers, type Startable } from '../common/lifecycle';
import type { Logger } from '../common/log';
import type { NodeWatch } from './peers';
import { trimTombstones, type LastReclaim, type PeerRecord, type RecordStore } from './record';
import { isoTime } from '../common/time';

export interface ReclaimComponents {
  /** This router's peer name. */
  self: string;
  /** The Node this router runs on. */
  nodeName: string;
  record: RecordStore;
  nodes: NodeWatch;
  ipam: {
    /** Takes over the peer's space; refuses (throws) while the peer is reachable. */
    rmpeer(peer: string): Promise<{ addresses: number }>;
    /** Whether this router's ring is initialised: without it a takeover would move nothing. */
    ringReady(): boolean;
  };
  mesh: { isReachable(peer: string): boolean };
  log: Logger;
  /**
   * Called when a sweep finds this running router's own peer reclaimed by another (its Node
   * was deleted while it was cut off): its IPAM state is no longer its own, and the caller
   * should stop the router so that it restarts with empty state.
   */
  onSelfReclaimed?: (by: string) => void;
  /** Wall clock in ms (claims expire by it); default Date.now. */
  now?: () => number;
}

export interface ReclaimOptions {
  /** How long a claim holds (default 60 s): far longer than a takeover takes. */
  leaseMs?: number;
  /** Sweep this often besides Node events (default 15 s), to finish the jobs of dead holders. */
  sweepMs?: number;
}

export type SweepOutcome = 'reclaimed' | 'busy' | 'reachable' | 'gone' | 'not ready' | 'failed';

export class Reclaimer implements Startable {
  private readonly timers = new Timers();
  private readonly abort = new AbortController();
  private running: Promise<void> | undefined;
  private again = false;
  /** Takeovers done here whose finish did not reach the record yet: the true address counts. */
  private readonly done = new Map<string, number>();
  private readonly onChange = () => this.kick();

  constructor(
    private readonly c: ReclaimComponents,
    private readonly o: ReclaimOptions = {},
  ) {}

  private now(): number {
    return (this.c.now ?? Date.now)();
  }

  private iso(ms = this.now()): string {
    return isoTime(ms);
  }

  /** Follows Node deletions (the router registered itself with `registerAndDecide` before IPAM loaded). */
  async start(): Promise<void> {
    this.c.nodes.on('delete', this.onChange);
    this.c.nodes.on('synced', this.onChange);
    this.timers.every(this.o.sweepMs ?? 15_000, this.onChange);
    this.kick();
  }

  async stop(): Promise<void> {
    this.c.nodes.off('delete', this.onChange);
    this.c.nodes.off('synced', this.onChange);
    this.timers.clear();
    this.abort.abort();
    await this.running?.catch(() => undefined);
  }

  /** The last finished reclaim and the claims open, as last seen, for status. */
  status(): { lastReclaim?: LastReclaim; claims: number; peers: number } {
    const r = this.c.record.last;
    return { lastReclaim: r?.lastReclaim, claims: Object.keys(r?.claims ?? {}).length, peers: Object.keys(r?.peers ?? {}).length };
  }

  /** Runs a sweep soon; sweeps never overlap (a request during one runs another after it). */
  kick(): void {
    if (this.abort.signal.aborted) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.sweep()
      .then(() => undefined)
      .catch((e: unknown) => this.c.log.warn({ err: (e as Error).message }, 'reclaim sweep failed'))
      .finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  /** Peers in the record that are due for reclaim: their Node is gone, or a newer peer took their Node. */
  candidates(r: PeerRecord): string[] {
    if (!this.c.nodes.synced) return [];
    return Object.entries(r.peers)
      .filter(([p, e]) => p !== this.c.self && (e.supersededBy !== undefined || !this.c.nodes.get(e.node)))
      .map(([p]) => p)
      .sort();
  }

  /** One pass over the record: tries every candidate; returns what happened to each. */
  async sweep(): Promise<Map<string, SweepOutcome>> {
    const out = new Map<string, SweepOutcome>();
    if (!this.c.nodes.synced) return out;
    const r = await this.c.record.read();
    const me = r.reclaimed[this.c.self];
    if (me && !r.peers[this.c.self]) {
      this.c.log.error({ by: me.by, at: me.at }, 'this peer was reclaimed by another router while running');
      this.c.onSelfReclaimed?.(me.by);
      return out;
    }
    if (!r.ring && this.c.ipam.ringReady()) await this.markRing();
    for (const peer of this.candidates(r)) {
      if (this.abort.signal.aborted) break;
      out.set(peer, await this.reclaim(peer));
    }
    return out;
  }

  /** Claim, take over, finish: for one peer. */
  async reclaim(peer: string): Promise<SweepOutcome> {
    const { self, log } = this.c;
    if (!this.done.has(peer)) {
      if (this.c.mesh.isReachable(peer)) return 'reachable';
      if (!this.c.ipam.ringReady()) return 'not ready';
    }
    const lease = this.o.leaseMs ?? 60_000;
    let outcome: SweepOutcome | undefined;
    let previousHolder: string | undefined;
    await this.c.record.update((r) => {
      outcome = undefined;
      if (!r.peers[peer]) return void (outcome = 'gone');
      const cl = r.claims[peer];
      if (cl && cl.holder !== self && Date.parse(cl.expires) > this.now()) return void (outcome = 'busy');
      previousHolder = cl && cl.holder !== self ? cl.holder : cl?.previousHolder;
      r.claims[peer] = { holder: self, holderNode: this.c.nodeName, since: this.iso(), expires: this.iso(this.now() + lease), ...(previousHolder ? { previousHolder } : {}) };
      return r;
    }, this.abort.signal);
    if (outcome) return outcome;
    const node = this.c.record.last?.peers[peer]?.node ?? '';
    log.info({ peer, node, previousHolder }, 'claimed the space of a peer whose node is gone');

    let addresses = this.done.get(peer);
    if (addresses === undefined) {
      // the peer may have come back between the sweep and the claim
      if (this.c.mesh.isReachable(peer)) {
        await this.release(peer);
        return 'reachable';
      }
      try {
        addresses = (await this.c.ipam.rmpeer(peer)).addresses;
      } catch (e) {
        log.warn({ peer, err: (e as Error).message }, 'taking over the space failed; releasing the claim');
        await this.release(peer);
        return 'failed';
      }
      this.done.set(peer, addresses);
    }
    const taken = addresses;
    await this.c.record.update((r) => {
      const cl = r.claims[peer];
      if (cl && cl.holder !== self) {
        log.error({ peer, holder: cl.holder }, 'the claim passed to another router while this one reclaimed; leaving the record to it');
        return undefined;
      }
      const entry = r.peers[peer];
      r.lastReclaim = { peer, node: entry?.node ?? node, by: self, byNode: this.c.nodeName, at: this.iso(), addresses: taken, ...(previousHolder ? { previousHolder } : {}) };
      // no claim left: the peer came back meanwhile and registered anew, with empty state
      // (registerAndDecide wipes a claimed peer): keep its new entry
      if (!cl) return r;
      delete r.peers[peer];
      delete r.claims[peer];
      r.reclaimed[peer] = { node: entry?.node ?? node, by: self, at: this.iso() };
      trimTombstones(r);
      return r;
    }, this.abort.signal);
    this.done.delete(peer);
    log.info({ peer, node, addresses: taken }, 'reclaimed the space of a deleted node');
    return 'reclaimed';
  }

  /** Marks in the record that the cluster has a ring (see bootstrap.ts): later routers join it as observers. */
  private async markRing(): Promise<void> {
    await this.c.record.update((r) => (r.ring ? undefined : { ...r, ring: { by: this.c.self, at: this.iso() } }), this.abort.signal);
    this.c.log.info({}, 'marked the ring as existing in the peer record');
  }

  private async release(peer: string): Promise<void> {
    await this.c.record.update((r) => {
      if (r.claims[peer]?.holder !== this.c.self) return undefined;
      delete r.claims[peer];
      return r;
    }, this.abort.signal);
  }
}

export type IpamStateDecision = { decision: 'wipe' | 'keep'; reason: string };

/**
 * Registers this router (peer `self` on Node `nodeName`) in the record and says whether it may
 * load its IPAM state, in one compare-and-swap, before IPAM loads. 'wipe' means: start with no
 * ring, no consensus state and no allocations (the pods of a deleted Node went with it). A
 * claim another router holds on this peer is cancelled here, and the state wiped, so whether
 * that reclaimer's takeover happens or not, no address can be held twice. Failures are
 * thrown after the record's deadline: guessing either way could hand out addresses twice.
 */
export async function registerAndDecide(c: { record: RecordStore; log: Logger }, o: { self: string; nodeName: string; now?: () => number }): Promise<IpamStateDecision> {
  let decided: IpamStateDecision = { decision: 'keep', reason: '' };
  const at = isoTime((o.now ?? Date.now)());
  await c.record.update((r) => {
    decided = decideFromRecord(r, o);
    const cur = r.peers[o.self];
    for (const e of Object.values(r.peers)) if (e !== cur && e.node === o.nodeName) e.supersededBy = o.self;
    r.peers[o.self] = { node: o.nodeName, since: cur?.node === o.nodeName ? cur.since : at };
    delete r.reclaimed[o.self];
    delete r.claims[o.self];
    return r;
  });
  c.log.info({ peer: o.self, node: o.nodeName, ...decided }, 'registered in the peer record');
  return decided;
}

/** The decision of `registerAndDecide` from a record as read. */
export function decideFromRecord(r: PeerRecord, o: { self: string; nodeName: string }): IpamStateDecision {
  const gone = r.reclaimed[o.self];
  if (gone) return { decision: 'wipe', reason: `peer ${o.self} was reclaimed by ${gone.by} at ${gone.at}` };
  const claim = r.claims[o.self];
  if (claim && claim.holder !== o.self) return { decision: 'wipe', reason: `peer ${o.self} was being reclaimed by ${claim.holder}` };
  if (r.peers[o.self]) return { decision: 'keep', reason: `peer ${o.self} is registered for node ${r.peers[o.self]!.node}` };
  const other = Object.entries(r.peers).find(([p, e]) => p !== o.self && e.node === o.nodeName && e.supersededBy === undefined);
  if (other) return { decision: 'wipe', reason: `node ${o.nodeName} is registered to peer ${other[0]}, and this peer is not in the record` };
  return { decision: 'keep', reason: `peer ${o.self} is new to the record` };
}
