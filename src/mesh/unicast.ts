/**
 * Messages for one peer, forwarded hop by hop along the mesh's routes (IPAM's space requests
 * and answers, Paxos).
 *
 * Why it is this way: a hop is the route's next hop, or the peer itself when it is a neighbour.
 * A peer with no route yet is sent back through the neighbour its last message came through:
 * a router that has just joined asks at once, and its entry may still be on the way to the one
 * that answers. Before that fallback, an IPAM space reply to a router that had just joined was
 * dropped, and the asker waited out its 3 s deadline.
 */
import type { Message } from './protocol';

export type UnicastFrame = Extract<Message, { t: 'msg' }>;

/** What unicast needs of the mesh. */
export interface UnicastComponents {
  readonly self: string;
  /** The next hop towards `peer` by the routes, when there is one. */
  nextHop(peer: string): string | undefined;
  /** Writes to the established connection to `peer`; false when there is none. */
  writeTo(peer: string, m: UnicastFrame): boolean;
}

/** How many hops a message may take. */
export const UNICAST_TTL = 16;
/** The way-back table is dropped when it holds this many peers (a new one fills as messages come). */
const CAME_VIA_MAX = 10_000;

export class Unicast {
  private readonly handlers = new Map<string, (from: string, body: unknown) => void>();
  /** The neighbour each peer's last message came through (the way back while routes lack it). */
  private readonly cameVia = new Map<string, string>();

  constructor(private readonly c: UnicastComponents) {}

  onMessage(type: string, h: (from: string, body: unknown) => void): void {
    this.handlers.set(type, h);
  }

  /** Sends to one peer along the mesh; false when it cannot be reached now. */
  send(to: string, type: string, body: unknown): boolean {
    if (to === this.c.self) {
      queueMicrotask(() => this.handlers.get(type)?.(to, body));
      return true;
    }
    return this.forward({ t: 'msg', from: this.c.self, to, type, ttl: UNICAST_TTL, body });
  }

  /** A message that came from neighbour `via`: handled here or passed on. */
  receive(m: UnicastFrame, via: string): void {
    if (this.cameVia.get(m.from) !== via) {
      if (this.cameVia.size >= CAME_VIA_MAX) this.cameVia.clear();
      this.cameVia.set(m.from, via);
    }
    if (m.to === this.c.self) this.handlers.get(m.type)?.(m.from, m.body);
    else this.forward(m);
  }

  private forward(m: UnicastFrame): boolean {
    if (m.ttl <= 0) return false;
    const next = { ...m, ttl: m.ttl - 1 };
    if (this.c.writeTo(m.to, next)) return true;
    const hop = this.c.nextHop(m.to) ?? this.cameVia.get(m.to);
    return hop !== undefined && this.c.writeTo(hop, next);
  }
}
