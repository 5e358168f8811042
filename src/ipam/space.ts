/**
 * Moving address space between peers: a host short of space asks a peer that owns some; the
 * owner gives it a block and says so in the ring. Free space is gossiped on a channel of its
 * own, so a requester asks the peer with the most first.
 *
 * Why it is this way: every request carries an id and a reply is matched to the request that
 * asked, never to "the next reply from that peer", so concurrent requests to one donor, or a
 * reply arriving after its request timed out, cannot be taken by the wrong waiter. A late
 * successful reply still carries a valid ring change, so it is merged, just not waited for.
 */
import { randomBytes } from 'node:crypto';
import { VersionedMap, type MapData } from '../common/crdt';
import { formatCidr, lastOf, parseCidr, type Cidr } from '../common/ip';
import type { Logger } from '../common/log';
import type { ChannelHandle, Gossiper } from '../mesh/gossip';
import type { RingData, Span } from './ring';

export interface SpaceRequest {
  id: string;
  subnet: string;
}
export type SpaceReply = { id: string; ok: true; block: string; ring: RingData } | { id: string; ok: false; reason: string };

/** What the exchange needs from the mesh. */
export interface SpaceMesh {
  channel<T>(name: string, g: Gossiper<T>): ChannelHandle<T>;
  send(to: string, type: string, body: unknown): boolean;
  onMessage(type: string, h: (from: string, body: unknown) => void): void;
  isReachable(peer: string): boolean;
}

export interface SpaceComponents {
  self: string;
  mesh: SpaceMesh;
  log: Logger;
  /** The ring's spans now. */
  spans(): readonly Span[];
  /** Answers a request from a peer (the donation itself, persisted before it resolves). */
  give(from: string, subnet: Cidr): Promise<{ block: Cidr; ring: RingData } | { reason: string }>;
  /** Merges ring data a donor sent; false when it could not be taken. */
  received(ring: RingData, from: string): void;
}

export const REQUEST_TYPE = 'ipam-space-req';
export const REPLY_TYPE = 'ipam-space-reply';

export class SpaceExchange {
  private readonly free = new VersionedMap<{ free: number }>();
  private readonly freeChannel: ChannelHandle<{ free: number }>;
  private readonly waiting = new Map<string, { donor: string; done: (r: SpaceReply | undefined) => void }>();

  constructor(private readonly c: SpaceComponents) {
    this.freeChannel = c.mesh.channel<{ free: number }>('ipam-free', {
      full: () => this.free.toData(),
      digest: (n) => this.free.digest(n),
      inBuckets: (b, of) => this.free.inBuckets(b, of),
      keyCount: () => this.free.size,
      merge: (data) => this.free.merge(data),
    });
    c.mesh.onMessage(REQUEST_TYPE, (from, body) => void this.onRequest(from, body as SpaceRequest));
    c.mesh.onMessage(REPLY_TYPE, (from, body) => this.onReply(from, body as SpaceReply));
  }

  /** Publishes this peer's free space (a gossip change only when it differs). */
  publishFree(n: number): void {
    if (this.free.get(this.c.self)?.free === n) return;
    this.freeChannel.gossip({ [this.c.self]: this.free.set(this.c.self, { free: n }) } as MapData<{ free: number }>);
  }

  /** Free addresses a peer last reported. */
  freeOf(peer: string): number | undefined {
    return this.free.get(peer)?.free;
  }

  /** Reachable peers owning space in the subnet, most free space first. */
  donors(subnet: Cidr): string[] {
    const owners = new Set(
      this.c
        .spans()
        .filter((s) => s.owner !== this.c.self && s.first <= lastOf(subnet) && s.last >= subnet.base)
        .map((s) => s.owner),
    );
    const free = (p: string) => this.freeOf(p) ?? 0;
    return [...owners].filter((p) => this.c.mesh.isReachable(p)).sort((a, b) => free(b) - free(a) || (a < b ? -1 : 1));
  }

  /** Asks `donor` for space in `subnet`; undefined when it did not answer in time or cannot be reached. */
  request(donor: string, subnet: Cidr, timeoutMs: number): Promise<SpaceReply | undefined> {
    const id = randomBytes(8).toString('hex');
    return new Promise((resolve) => {
      const t = setTimeout(() => done(undefined), timeoutMs);
      t.unref();
      const done = (r: SpaceReply | undefined) => {
        clearTimeout(t);
        this.waiting.delete(id);
        resolve(r);
      };
      this.waiting.set(id, { donor, done });
      if (!this.c.mesh.send(donor, REQUEST_TYPE, { id, subnet: formatCidr(subnet) } satisfies SpaceRequest)) done(undefined);
    });
  }

  private onReply(from: string, r: SpaceReply): void {
    if (typeof r?.id !== 'string') return;
    const w = this.waiting.get(r.id);
    if (w && w.donor === from) {
      if (r.ok) this.c.received(r.ring, from);
      w.done(r);
    } else if (r.ok && r.ring) {
      // nobody waits for it any more, but the space is ours now: take it
      this.c.log.info({ donor: from, block: r.block }, 'late answer to a space request; taking the space');
      this.c.received(r.ring, from);
    }
  }

  private async onRequest(from: string, req: SpaceRequest): Promise<void> {
    const id = typeof req?.id === 'string' ? req.id : '';
    const reply = (r: SpaceReply) => this.c.mesh.send(from, REPLY_TYPE, r);
    const subnet = typeof req?.subnet === 'string' ? parseCidr(req.subnet) : undefined;
    if (!subnet || !id) return void reply({ id, ok: false, reason: 'bad request' });
    try {
      const r = await this.c.give(from, subnet);
      if ('reason' in r) reply({ id, ok: false, reason: r.reason });
      else reply({ id, ok: true, block: formatCidr(r.block), ring: r.ring });
    } catch (e) {
      // a failed write means no answer: the requester asks again or another peer
      this.c.log.error({ peer: from, err: (e as Error).message }, 'giving space failed');
    }
  }

  /** Abandons every request still waiting. */
  stop(): void {
    for (const w of [...this.waiting.values()]) w.done(undefined);
  }
}
