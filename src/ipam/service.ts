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
import { containsCidr, formatCidr, formatIPv4, lastOf, parseCidr, type Cidr } from '../common/ip';
import type { Logger } from '../common/log';
import type { MapData } from '../common/crdt';
import type { Mesh } from '../mesh/mesh';
import { Allocator, type AllocatorState } from './allocator';
import { Consensus, type PaxosEntry } from './consensus';
import { largestFreeBlock, Ring, RingConflictError, type RingData } from './ring';

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

export interface IpamServiceOptions {
  self: string;
  range: Cidr;
  defaultSubnet: Cidr;
  init: IpamInit;
  log: Logger;
  /** Persists the state; resolves once it is on disk. */
  commit: () => Promise<void>;
  /** How long an allocation may wait for space (default 10 s). */
  spaceTimeoutMs?: number;
}

interface SpaceRequest {
  subnet: string;
}
type SpaceReply = { ok: true; block: string; ring: RingData } | { ok: false; reason: string };

/** Aligned CIDRs nest or are disjoint: the part of each owned block inside `subnet`. */
export function intersectCidrs(owned: readonly Cidr[], subnet: Cidr): Cidr[] {
  const out: Cidr[] = [];
  for (const c of owned) {
    if (containsCidr(subnet, c)) out.push(c);
    else if (containsCidr(c, subnet)) out.push(subnet);
  }
  return out;
}

export class IpamService extends EventEmitter {
  readonly ring: Ring;
  readonly consensus: Consensus;
  readonly allocator: Allocator;
  private owned: Cidr[] = [];
  private mesh: Mesh | undefined;
  private conflict: string | undefined;
  private readonly inflight = new Map<string, Promise<void>>();
  private lastReason = '';
  pendingAllocations = 0;

  constructor(readonly o: IpamServiceOptions) {
    super();
    this.ring = new Ring(o.range);
    const init = o.init;
    this.consensus = new Consensus(o.self, init.mode === 'consensus' ? init.size : 1, init.mode === 'observer');
    this.allocator = new Allocator(o.range, o.defaultSubnet, { owned: () => this.owned });
    if (init.mode === 'seed') this.ring.initFrom(init.names);
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

  private refreshOwned(): void {
    this.owned = this.ring.ownedBy(this.o.self);
    this.emit('change');
  }

  /** Joins the mesh: gossip channels for the ring and consensus, and space requests. */
  attach(mesh: Mesh): void {
    this.mesh = mesh;
    mesh.register({
      name: 'ring',
      full: () => this.ring.toData(),
      merge: (data, from) => this.mergeRing(data as RingData, from),
    });
    mesh.register({
      name: 'paxos',
      full: () => (this.ring.initialised() ? {} : this.consensus.entries.toData()),
      merge: (data) => {
        const d = this.consensus.merge(data as MapData<PaxosEntry>);
        if (d) queueMicrotask(() => this.step());
        return d;
      },
    });
    mesh.onMessage('ipam-space-req', (from, body) =>
      // a failed write means no answer: the requester asks again or another peer
      this.onSpaceRequest(from, body as SpaceRequest).catch((e) => this.o.log.error({ peer: from, err: (e as Error).message }, 'giving space failed')),
    );
    mesh.onMessage('ipam-space-reply', (from, body) => this.emit(`reply:${from}`, body as SpaceReply));
    mesh.on('reachability', () => this.step());
    this.step();
  }

  /** Persists in the background (nobody waits for the answer); a failure is logged, never thrown. */
  private persistLater(what: string): void {
    this.o.commit().catch((e) => this.o.log.error({ err: (e as Error).message }, `persisting ${what} failed`));
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
      if (this.conflict !== e.message) this.o.log.error({ peer: from, err: e.message }, 'refusing the IPAM ring of a peer');
      this.conflict = `${e.message}; peer ${from}`;
      return undefined;
    }
  }

  /** Consensus progress: runs whenever something it depends on changed. */
  step(): void {
    if (this.ring.initialised()) return;
    const reach = (p: string) => p === this.o.self || (this.mesh?.isReachable(p) ?? false);
    const d = this.consensus.step(reach);
    if (d) this.mesh?.gossip('paxos', d);
    const value = this.consensus.decided();
    if (value) {
      const delta = this.ring.initFrom(value);
      this.o.log.info({ owners: value }, 'IPAM ring initialised by consensus');
      this.refreshOwned();
      this.persistLater('the ring');
      this.mesh?.gossip('ring', delta);
    } else if (d) {
      this.persistLater('consensus state');
    }
  }

  status(): IpamStatus {
    if (this.conflict) return { status: 'ring conflict', reason: this.conflict };
    if (!this.ring.initialised()) {
      if (this.o.init.mode === 'observer') return { status: 'awaiting consensus', reason: 'observer: waiting for the ring from a peer' };
      const known = this.consensus.known((p) => p === this.o.self || (this.mesh?.isReachable(p) ?? false));
      return { status: 'awaiting consensus', reason: `quorum ${this.consensus.quorum}, ${known} known` };
    }
    // ready: this host has space, or a reachable peer has some to give when asked
    if (this.allocator.freeCount() > 0 || this.canAskPeers()) return { status: 'ready' };
    const others = [...this.ring.sizes().keys()].filter((p) => p !== this.o.self);
    if (others.length > 0 && others.every((p) => !this.mesh?.isReachable(p))) {
      return { status: 'all ranges owned by unreachable peers', reason: `owners: ${others.join(', ')}` };
    }
    return { status: 'no space', reason: this.lastReason || 'no free address in this peer\'s space' };
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
      if (owner !== undefined && owner !== this.o.self) {
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
      await wait(500);
      return;
    }
    for (const donor of this.donors(subnet)) {
      if (Date.now() >= deadline) return;
      const reply = await this.request(donor, subnet, Math.min(3000, deadline - Date.now()));
      if (reply?.ok) {
        this.mergeRing(reply.ring, donor);
        await this.o.commit();
        this.o.log.info({ donor, block: reply.block }, 'received address space');
        return;
      }
      this.lastReason = reply ? `peer ${donor}: ${reply.reason}` : `peer ${donor} did not answer`;
    }
    if (this.donors(subnet).length === 0) this.lastReason = `no reachable peer owns free space in ${formatCidr(subnet)}`;
    await wait(500);
  }

  /** Whether some reachable peer owns space this host could ask for. */
  canAskPeers(subnet: Cidr = this.o.defaultSubnet): boolean {
    return this.donors(subnet).length > 0;
  }

  /** Reachable peers owning space in the subnet, most free space first. */
  private donors(subnet: Cidr): string[] {
    const mesh = this.mesh;
    if (!mesh) return [];
    const free = (p: string) => Number(mesh.topology.get(p)?.meta.ipamFree ?? 0);
    const owners = new Set(
      this.ring
        .spans()
        .filter((s) => s.owner !== this.o.self && s.first <= lastOf(subnet) && s.last >= subnet.base)
        .map((s) => s.owner),
    );
    return [...owners].filter((p) => mesh.isReachable(p)).sort((a, b) => free(b) - free(a) || (a < b ? -1 : 1));
  }

  private request(donor: string, subnet: Cidr, timeoutMs: number): Promise<SpaceReply | undefined> {
    return new Promise((resolve) => {
      const ev = `reply:${donor}`;
      const t = setTimeout(() => {
        this.off(ev, on);
        resolve(undefined);
      }, timeoutMs);
      const on = (r: SpaceReply) => {
        clearTimeout(t);
        resolve(r);
      };
      this.once(ev, on);
      if (!this.mesh!.send(donor, 'ipam-space-req', { subnet: formatCidr(subnet) } satisfies SpaceRequest)) {
        clearTimeout(t);
        this.off(ev, on);
        resolve(undefined);
      }
    });
  }

  /**
   * Gives a requester space: the largest aligned block free here, its upper half when that
   * block is more than half of this peer's space. Persisted before the answer goes out.
   */
  private async onSpaceRequest(from: string, req: SpaceRequest): Promise<void> {
    const reply = (r: SpaceReply) => this.mesh?.send(from, 'ipam-space-reply', r);
    const subnet = typeof req?.subnet === 'string' ? parseCidr(req.subnet) : undefined;
    if (!subnet) return void reply({ ok: false, reason: 'bad request' });
    if (!this.ring.initialised()) return void reply({ ok: false, reason: 'ring not initialised here' });
    const mine = intersectCidrs(this.owned, subnet);
    const used = this.allocator.usedIn(mine);
    let block = largestFreeBlock(mine, used);
    if (!block) return void reply({ ok: false, reason: 'no free space' });
    // Halve a block that is more than half of this peer's space in the subnet. Counting the
    // space owned (not owned less the few addresses in use) keeps Weave's seed behaviour: a
    // lone first host with a pod or two gives the second host 10.40.0.0/13, whole.
    const ownedHere = mine.reduce((n, c) => n + 2 ** (32 - c.prefix), 0);
    if (block.prefix < 32 && 2 * 2 ** (32 - block.prefix) > ownedHere) block = { base: block.base + 2 ** (31 - block.prefix), prefix: block.prefix + 1 };
    const delta = this.ring.give(this.o.self, from, block);
    this.refreshOwned();
    await this.o.commit();
    this.mesh?.gossip('ring', delta);
    this.o.log.info({ to: from, block: formatCidr(block) }, 'gave address space');
    reply({ ok: true, block: formatCidr(block), ring: delta });
  }

  /** Takes over the space of a peer that is gone for good (`weft rmpeer`). */
  async rmpeer(peer: string): Promise<{ addresses: number }> {
    if (peer === this.o.self) throw new AddressInUseError('cannot rmpeer this router itself');
    if (this.mesh?.isReachable(peer)) throw new AddressInUseError(`peer ${peer} is still reachable; stop it first`);
    const size = this.ring.sizes().get(peer) ?? 0;
    const delta = this.ring.takeOver(peer, this.o.self);
    this.refreshOwned();
    await this.o.commit();
    this.mesh?.gossip('ring', delta);
    this.o.log.info({ peer, addresses: size }, 'took over the space of a removed peer');
    return { addresses: size };
  }
}
