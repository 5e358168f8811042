/**
 * An in-memory stand-in for the mesh, as IPAM sees it (its port, `IpamMesh`): gossip channels
 * delivered to every other node, unicast messages through a queue the test can hold, reorder
 * or drop, and reachability the test sets. No sockets, no timers of its own.
 */
import type { MapData } from '../../src/common/crdt';
import type { ChannelHandle, Gossiper } from '../../src/mesh/gossip';
import type { IpamMesh } from '../../src/ipam/service';

export interface Sent {
  from: string;
  to: string;
  type: string;
  body: unknown;
}

export class FakeNet {
  readonly nodes = new Map<string, FakeMesh>();
  /** Unicast messages not delivered yet (when `hold` is set). */
  readonly queue: Sent[] = [];
  hold = false;
  /** Pairs that cannot reach each other ("a|b"). */
  readonly cut = new Set<string>();

  node(name: string): FakeMesh {
    const m = new FakeMesh(this, name);
    this.nodes.set(name, m);
    return m;
  }

  reachable(a: string, b: string): boolean {
    return a === b || (this.nodes.has(b) && !this.cut.has(`${a}|${b}`) && !this.cut.has(`${b}|${a}`));
  }

  /** Delivers queued messages (all, or those `pick` selects) in the order given. */
  deliver(pick: (s: Sent) => boolean = () => true): number {
    const now = this.queue.filter(pick);
    for (const s of now) this.queue.splice(this.queue.indexOf(s), 1);
    for (const s of now) this.nodes.get(s.to)?.handlers.get(s.type)?.(s.from, structuredClone(s.body));
    return now.length;
  }

  /** Tells every node that reachability changed. */
  changed(): void {
    for (const n of this.nodes.values()) for (const w of n.watchers) w();
  }
}

export class FakeMesh implements IpamMesh {
  readonly channels = new Map<string, Gossiper<unknown>>();
  readonly handlers = new Map<string, (from: string, body: unknown) => void>();
  readonly watchers: (() => void)[] = [];
  settledNow = true;
  waitingFor: string[] = [];

  constructor(
    private readonly net: FakeNet,
    readonly name: string,
  ) {}

  channel<T>(name: string, g: Gossiper<T>): ChannelHandle<T> {
    if (this.channels.has(name)) throw new Error(`duplicate channel ${name}`);
    this.channels.set(name, g as Gossiper<unknown>);
    return {
      name,
      gossip: (delta) => {
        for (const n of this.net.nodes.values()) {
          if (n === this || !this.net.reachable(this.name, n.name)) continue;
          n.channels.get(name)?.merge(structuredClone(delta) as MapData<unknown>, this.name);
        }
      },
    };
  }

  /** What a new connection would bring: every channel's full state from `other`. */
  syncFrom(other: FakeMesh): void {
    for (const [name, g] of other.channels) this.channels.get(name)?.merge(structuredClone(g.full()), other.name);
  }

  send(to: string, type: string, body: unknown): boolean {
    if (!this.net.reachable(this.name, to)) return false;
    const s = { from: this.name, to, type, body: structuredClone(body) };
    if (this.net.hold) this.net.queue.push(s);
    else queueMicrotask(() => this.net.nodes.get(to)?.handlers.get(type)?.(s.from, s.body));
    return true;
  }

  onMessage(type: string, h: (from: string, body: unknown) => void): void {
    this.handlers.set(type, h);
  }

  isReachable(peer: string): boolean {
    return this.net.reachable(this.name, peer);
  }

  settled(): { settled: boolean; waitingFor: string[] } {
    return { settled: this.settledNow, waitingFor: this.waitingFor };
  }

  watch(fn: () => void): void {
    this.watchers.push(fn);
  }
}
