/**
 * IPAM across hosts: the ring (who owns what), consensus (who owns it first), the allocator
 * (what this host handed out), and the mesh messages that move space between peers.
 *
 * Allocation never hangs: a request that finds no space here asks the peer with the most free
 * space for some, and gives up with NoSpaceError (CNI code 11, "try again later") at its
 * deadline, saying why (awaiting consensus, owners unreachable, range full).
 */
import { EventEmitter } from 'node:events';
import type { AllocationRecord, AttachmentKey } from '../common/api';
import { NoSpaceError, AddressInUseError } from '../common/errors';
import { containsCidr, formatCidr, formatIPv4, lastOf, type Cidr } from '../common/ip';
import type { Startable } from '../common/lifecycle';
import type { Logger } from '../common/log';
import type { MapData } from '../common/crdt';
import type { ChannelHandle } from '../mesh/gossip';
import { allocatable, Allocator, type AllocatorState } from './allocator';
import { Consensus, type PaxosEntry } from './consensus';
import { largestFreeBlock, Ring, RingConflictError, type RingData } from './ring';
import { SpaceExchange, type SpaceMesh } from './space';

export type IpamInit = { mode: 'consensus'; size: number } | { mode: 'seed'; names: string[] } | { mode: 'observer' };

/** What ipam.json holds. */
export interface IpamFile extends AllocatorState {
  version: 1;
  range: string;
  ring: RingData;
  paxos: MapData<PaxosEntry>;
}

export interface IpamStatus {
  status: 'ready' | 'awaiting consensus' | 'no space' | 'all ranges owned by unreachable peers' | 'ring conflict';
  reason?: string;
}

/** What IPAM needs from the mesh: channels of its own, unicast, reachability, and when to look again. */
export interface IpamMesh extends SpaceMesh {
  /** Whether this router has heard from every peer it was told to connect to (see ConnectionMaker.settled). */
  settled(): { settled: boolean; waitingFor: string[] };
  /** Calls `fn` whenever reachability or what this router has heard changes. */
  watch(fn: () => void): void;
}

export interface IpamComponents {
  self: string;
  mesh: IpamMesh;
  log: Logger;
  /** Persists the state; resolves once it is on disk. */
  commit: () => Promise<void>;
}

export interface IpamInitOptions {
  range: Cidr;
  defaultSubnet: Cidr;
  init: IpamInit;
  /** How long an allocation may wait for space (default 10 s). */
  spaceTimeoutMs?: number;
  /** How often free space is published (default 2 s). */
  freeEveryMs?: number;
}

/** Aligned CIDRs nest or are disjoint: the part of each owned block inside `subnet`. */
export function intersectCidrs(owned: readonly Cidr[], subnet: Cidr): Cidr[] {
  const out: Cidr[] = [];
  for (const c of owned) {
    if (containsCidr(subnet, c)) out.push(c);
    else if (containsCidr(c, subnet)) out.push(subnet);
  }
  return out;
}

/**
 * The block a donor gives: the largest aligned block free in its space, halved when that block
 * is more than half of its space in the subnet. Counting the space owned (not owned less the
 * few addresses in use) keeps Weave's seed behaviour: a lone first host with a pod or two gives
 * the second host 10.40.0.0/13, whole. A block must hold an address the requester can hand out
 * (`usable`): a lone free /32 that is the subnet's broadcast address is no gift (of a halved
 * /31 the usable half goes).
 */
export function donation(mine: readonly Cidr[], used: readonly number[], usable: (a: number) => boolean = () => true): Cidr | undefined {
  const taken = [...used];
  const ownedHere = mine.reduce((n, c) => n + 2 ** (32 - c.prefix), 0);
  for (;;) {
    const block = largestFreeBlock(mine, taken);
    if (!block) return undefined;
    const halves =
      block.prefix < 32 && 2 * 2 ** (32 - block.prefix) > ownedHere
        ? [{ base: block.base + 2 ** (31 - block.prefix), prefix: block.prefix + 1 }, { base: block.base, prefix: block.prefix + 1 }]
        : [block];
    const gift = halves.find((h) => holdsUsable(h, usable));
    if (gift) return gift;
    // nothing in it a requester could use: look past it
    for (let a = block.base; a <= lastOf(block); a++) taken.push(a);
  }
}

function holdsUsable(c: Cidr, usable: (a: number) => boolean): boolean {
  for (let a = c.base; a <= lastOf(c); a++) if (usable(a)) return true;
  return false;
}

export class IpamService extends EventEmitter implements Startable {
  readonly ring: Ring;
  readonly consensus: Consensus;
  readonly allocator: Allocator;
  private readonly space: SpaceExchange;
  private readonly ringChannel: ChannelHandle<unknown>;
  private readonly paxosChannel: ChannelHandle<PaxosEntry>;
  private owned: Cidr[] = [];
  private conflict: string | undefined;
  private readonly inflight = new Map<string, Promise<void>>();
  private lastReason = '';
  private freeTimer: NodeJS.Timeout | undefined;
  pendingAllocations = 0;

  constructor(
    private readonly c: IpamComponents,
    readonly o: IpamInitOptions,
  ) {
    super();
    this.ring = new Ring(o.range);
    const init = o.init;
    this.consensus = new Consensus(c.self, init.mode === 'consensus' ? init.size : 1, init.mode === 'observer');
    this.allocator = new Allocator(o.range, o.defaultSubnet, { owned: () => this.owned });
    if (init.mode === 'seed') this.ring.initFrom(init.names);
    this.ringChannel = c.mesh.channel('ring', {
      full: () => this.ring.toData(),
      merge: (data, from) => this.mergeRing(data as RingData, from),
    });
    this.paxosChannel = c.mesh.channel<PaxosEntry>('paxos', {
      full: () => (this.ring.initialised() ? {} : this.consensus.entries.toData()),
      merge: (data) => {
        const d = this.consensus.merge(data);
        if (d) queueMicrotask(() => this.step());
        return d;
      },
    });
    this.space = new SpaceExchange({
      self: c.self,
      mesh: c.mesh,
      log: c.log,
      spans: () => this.ring.spans(),
      give: (from, subnet) => this.give(from, subnet),
      received: (ring, from) => void this.mergeRing(ring, from),
    });
    c.mesh.watch(() => this.step());
    this.refreshOwned();
  }

  load(f: IpamFile): void {
    this.allocator.load(f);
    try {
      this.ring.merge(f.ring ?? {});
    } catch (e) {
      throw new Error(`the ring in the state file is unusable: ${(e as Error).message}`);
    }
    this.consensus.entries.merge(f.paxos ?? {});
    this.refreshOwned();
  }

  snapshot(): IpamFile {
    return { version: 1, range: formatCidr(this.o.range), ...this.allocator.snapshot(), ring: this.ring.toData(), paxos: this.consensus.entries.toData() };
  }

  async start(): Promise<void> {
    const publish = () => this.space.publishFree(this.allocator.freeCount());
    this.freeTimer = setInterval(publish, this.o.freeEveryMs ?? 2000);
    this.freeTimer.unref();
    publish();
    this.step();
  }

  async stop(): Promise<void> {
    clearInterval(this.freeTimer);
    this.space.stop();
  }

  /** Free addresses a peer last reported (this peer's own, counted now). */
  freeOf(peer: string): number | undefined {
    return peer === this.c.self ? this.allocator.freeCount() : this.space.freeOf(peer);
  }

  private refreshOwned(): void {
    this.owned = this.ring.ownedBy(this.c.self);
    this.emit('change');
  }

  /** Persists in the background (nobody waits for the answer); a failure is logged, never thrown. */
  private persistLater(what: string): void {
    this.c.commit().catch((e) => this.c.log.error({ err: (e as Error).message }, `persisting ${what} failed`));
  }

  private mergeRing(data: RingData, from: string): RingData | undefined {
    try {
      const d = this.ring.merge(data);
      if (d) {
        this.refreshOwned();
        this.persistLater('the ring');
      }
      return d;
    } catch (e) {
      if (!(e instanceof RingConflictError)) throw e;
      if (this.conflict !== `${e.message}; peer ${from}`) this.c.log.error({ peer: from, err: e.message }, 'refusing the IPAM ring of a peer');
      this.conflict = `${e.message}; peer ${from}`;
      return undefined;
    }
  }

  /**
   * Consensus progress: runs whenever something it depends on changed. A router that has not
   * yet heard from every peer it was pointed at takes no part: one of them may own a ring.
   */
  step(): void {
    if (this.ring.initialised() || !this.c.mesh.settled().settled) return;
    const reach = (p: string) => p === this.c.self || this.c.mesh.isReachable(p);
    const d = this.consensus.step(reach);
    if (d) this.paxosChannel.gossip(d);
    const value = this.consensus.decided();
    if (value) {
      const delta = this.ring.initFrom(value);
      this.c.log.info({ owners: value }, 'IPAM ring initialised by consensus');
      this.refreshOwned();
      this.persistLater('the ring');
      this.ringChannel.gossip(delta);
    } else if (d) {
      this.persistLater('consensus state');
    }
  }

  status(): IpamStatus {
    if (this.conflict) return { status: 'ring conflict', reason: this.conflict };
    if (!this.ring.initialised()) {
      if (this.o.init.mode === 'observer') return { status: 'awaiting consensus', reason: 'observer: waiting for the ring from a peer' };
      const s = this.c.mesh.settled();
      if (!s.settled) return { status: 'awaiting consensus', reason: `waiting to hear from ${s.waitingFor.join(', ')}` };
      const known = this.consensus.known((p) => p === this.c.self || this.c.mesh.isReachable(p));
      return { status: 'awaiting consensus', reason: `quorum ${this.consensus.quorum}, ${known} known` };
    }
    // ready: this host has space, or a reachable peer has some to give when asked
    if (this.allocator.freeCount() > 0 || this.canAskPeers()) return { status: 'ready' };
    const others = [...this.ring.sizes().keys()].filter((p) => p !== this.c.self);
    if (others.length > 0 && others.every((p) => !this.c.mesh.isReachable(p))) {
      return { status: 'all ranges owned by unreachable peers', reason: `owners: ${others.join(', ')}` };
    }
    return { status: 'no space', reason: this.lastReason || "no free address in this peer's space" };
  }

  /** Allocates, asking peers for space when this host has none; waits at most the deadline. */
  async allocate(
    key: AttachmentKey,
    subnet: Cidr,
    exact: number | undefined,
    extra: Pick<AllocationRecord, 'bridge' | 'mac' | 'pod' | 'gateway'>,
  ): Promise<AllocationRecord> {
    if (exact !== undefined && this.allocator.inRange(subnet) && !this.allocator.get(key)) {
      const owner = this.ring.ownerOf(exact);
      if (owner !== undefined && owner !== this.c.self) {
        throw new AddressInUseError(`${formatIPv4(exact)} is in the allocation range but owned by peer ${owner}`);
      }
    }
    const deadline = Date.now() + (this.o.spaceTimeoutMs ?? 10_000);
    this.pendingAllocations++;
    try {
      for (;;) {
        try {
          return this.allocator.allocate(key, subnet, exact, extra);
        } catch (e) {
          if (!(e instanceof NoSpaceError) || exact !== undefined || !this.allocator.inRange(subnet)) throw e;
          if (Date.now() >= deadline) throw new NoSpaceError(`no address within the deadline: ${this.describeWait(e.message)}`);
          await this.getSpace(subnet, deadline);
        }
      }
    } finally {
      this.pendingAllocations--;
    }
  }

  private describeWait(fallback: string): string {
    const s = this.status();
    return s.status === 'ready' ? fallback : `${s.status}${s.reason ? ` (${s.reason})` : ''}`;
  }

  /** One round of getting space in `subnet`: consensus, or a donation; shared by concurrent callers. */
  private getSpace(subnet: Cidr, deadline: number): Promise<void> {
    const k = formatCidr(subnet);
    let p = this.inflight.get(k);
    if (!p) {
      p = this.askForSpace(subnet, deadline).finally(() => this.inflight.delete(k));
      this.inflight.set(k, p);
    }
    return p;
  }

  private async askForSpace(subnet: Cidr, deadline: number): Promise<void> {
    const wait = (ms: number) =>
      new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(t);
          this.off('change', done);
          resolve();
        };
        const t = setTimeout(done, Math.max(0, Math.min(ms, deadline - Date.now())));
        t.unref();
        this.once('change', done);
      });
    if (!this.ring.initialised()) {
      this.step();
      // this step may have decided consensus itself (its 'change' came before any listener)
      if (!this.ring.initialised()) await wait(500);
      return;
    }
    for (const donor of this.space.donors(subnet)) {
      if (Date.now() >= deadline) return;
      const reply = await this.space.request(donor, subnet, Math.min(3000, deadline - Date.now()));
      if (reply?.ok) {
        await this.c.commit();
        this.c.log.info({ donor, block: reply.block }, 'received address space');
        return;
      }
      this.lastReason = reply ? `peer ${donor}: ${reply.reason}` : `peer ${donor} did not answer`;
    }
    if (this.space.donors(subnet).length === 0) this.lastReason = `no reachable peer owns free space in ${formatCidr(subnet)}`;
    await wait(500);
  }

  /** Whether some reachable peer owns space this host could ask for. */
  canAskPeers(subnet: Cidr = this.o.defaultSubnet): boolean {
    return this.space.donors(subnet).length > 0;
  }

  /** Gives a requester space, persisted before the answer goes out. */
  private async give(from: string, subnet: Cidr): Promise<{ block: Cidr; ring: RingData } | { reason: string }> {
    if (!this.ring.initialised()) return { reason: 'ring not initialised here' };
    const mine = intersectCidrs(this.owned, subnet);
    const block = donation(mine, this.allocator.usedIn(mine), (a) => allocatable(subnet, a));
    if (!block) return { reason: 'no free space' };
    const delta = this.ring.give(this.c.self, from, block);
    this.refreshOwned();
    await this.c.commit();
    this.ringChannel.gossip(delta);
    this.c.log.info({ to: from, block: formatCidr(block) }, 'gave address space');
    return { block, ring: delta };
  }

  /** Takes over the space of a peer that is gone for good (`weft rmpeer`, a deleted Node). */
  async rmpeer(peer: string): Promise<{ addresses: number }> {
    if (peer === this.c.self) throw new AddressInUseError('cannot rmpeer this router itself');
    if (this.c.mesh.isReachable(peer)) throw new AddressInUseError(`peer ${peer} is still reachable; stop it first`);
    const size = this.ring.sizes().get(peer) ?? 0;
    const delta = this.ring.takeOver(peer, this.c.self);
    this.refreshOwned();
    await this.c.commit();
    this.ringChannel.gossip(delta);
    this.c.log.info({ peer, addresses: size }, 'took over the space of a removed peer');
    return { addresses: size };
  }
}
