/**
 * The table of mesh connections: accepting and dialling, the limits, and what a valid hello
 * means (this router itself, a name clash, a duplicate, the limit).
 *
 * Why it is this way: only connections that finished their handshake count against the
 * connection limit; pending ones are few (the oldest evicted first, a few per remote host) and
 * short-lived (the handshake deadline), so idle or slow connections cannot keep a real peer
 * out. Two routers that dial each other at once keep the connection dialled by the one with
 * the smaller name: both sides pick the same one without talking.
 */
import type { Logger } from '../common/log';
import { Connection, type ConnectionHandler, type SelfIdentity } from './connection';
import type { Hello, Message } from './protocol';
import type { MeshTransport, TransportSocket } from './transport';

/**
 * Of two routers that dial each other, whether the connection `a` dialled is the one kept over
 * `b`'s: the smaller name's. The duplicate rule below settles by it, and a router that learns
 * of a peer from gossip lets the peer dial first when the peer's dial would win
 * (ConnectionMaker.learn).
 */
export function dialKept(a: string, b: string): boolean {
  return a < b;
}

export interface ConnectionLimits {
  /** How long a connection may take to connect and complete its handshake. */
  handshakeMs: number;
  /** Established connections at most. */
  maxConnections: number;
  /** Connections still in their handshake at most, and per remote host. */
  maxPending: number;
  maxPendingPerHost: number;
  /** Pre-shared key from the password (see secure-channel.ts); undefined runs without a secret. */
  psk?: Buffer;
}

/** What the mesh does with the table's events. */
export interface ConnectionEvents {
  /** The hello at a dialled target came from `peer` (also when the connection is then dropped). */
  identified(target: string, peer: string): void;
  /** A dialled target turned out to be this router. */
  reachedSelf(target: string): void;
  established(c: Connection): void;
  message(c: Connection, m: Message): void;
  closed(c: Connection, reason: string, info: { wasEstablished: boolean; refused: boolean }): void;
}

export interface ConnectionsComponents {
  self: SelfIdentity;
  transport: MeshTransport;
  log: Logger;
  traffic?: (dir: 'in' | 'out', kind: string, bytes: number) => void;
  events: ConnectionEvents;
}

export class Connections {
  private readonly conns = new Set<Connection>();
  /** The established connection to each peer (at most one: duplicates are settled first). */
  private readonly byPeer = new Map<string, Connection>();
  private readonly handler: ConnectionHandler;

  constructor(
    private readonly c: ConnectionsComponents,
    private readonly o: ConnectionLimits,
  ) {
    this.handler = {
      hello: (conn, h) => this.onHello(conn, h),
      message: (conn, m) => c.events.message(conn, m),
      closed: (conn, reason, info) => {
        this.conns.delete(conn);
        if (conn.hello && this.byPeer.get(conn.hello.name) === conn) this.byPeer.delete(conn.hello.name);
        c.events.closed(conn, reason, info);
      },
    };
  }

  /** Accepts connections on host:port; returns the function that stops listening. */
  listen(port: number, host: string): Promise<() => Promise<void>> {
    return this.c.transport.listen(port, host, (s) => this.accept(s));
  }

  all(): IterableIterator<Connection> {
    return this.conns.values();
  }

  get established(): number {
    let n = 0;
    for (const c of this.conns) if (c.established) n++;
    return n;
  }

  get pending(): number {
    let n = 0;
    for (const c of this.conns) if (c.pending) n++;
    return n;
  }

  /** How many connections accepted from `host` are still in their handshake. */
  inboundPending(host: string): number {
    let n = 0;
    for (const c of this.conns) if (c.pending && !c.outbound && c.remote.startsWith(`${host}:`)) n++;
    return n;
  }

  /** Room for another outbound connection now. */
  canDial(): boolean {
    return this.pending < this.o.maxPending && this.established < this.o.maxConnections;
  }

  /** The established connection to `peer`. */
  to(peer: string): Connection | undefined {
    const c = this.byPeer.get(peer);
    return c?.established ? c : undefined;
  }

  private track(socket: TransportSocket, outbound: boolean, remote: string, target?: string): Connection {
    const c = new Connection(socket, { outbound, remote, target, handshakeMs: this.o.handshakeMs, self: this.c.self, log: this.c.log, traffic: this.c.traffic, psk: this.o.psk }, this.handler);
    this.conns.add(c);
    return c;
  }

  /** Opens an outbound connection for target `addr`. */
  dial(addr: string, host: string, port: number): void {
    const socket = this.c.transport.dial(host, port);
    const c = this.track(socket, true, addr, addr);
    socket.once('connect', () => c.start());
    // the handshake deadline covers connecting too
    const t = setTimeout(() => c.pending && c.close(`no connection within ${this.o.handshakeMs} ms`, false), this.o.handshakeMs);
    t.unref();
  }

  private accept(socket: TransportSocket): void {
    const host = socket.remoteAddress ?? '?';
    const c = this.track(socket, false, `${host}:${socket.remotePort ?? 0}`);
    if (this.inboundPending(host) > this.o.maxPendingPerHost) {
      c.close(`too many connections from ${host} still in their handshake`, true);
      return;
    }
    if (this.pending > this.o.maxPending) {
      // the oldest one has had the longest to say hello: make room by dropping it
      const oldest = [...this.conns].filter((o) => o.pending && !o.outbound && o !== c).sort((a, b) => a.openedAt - b.openedAt)[0];
      oldest?.close('too many connections in their handshake', true);
    }
    c.start();
  }

  private onHello(c: Connection, h: Hello): void {
    const self = this.c.self;
    if (c.target) this.c.events.identified(c.target, h.name);
    if (h.name === self.name) {
      if (h.uid === self.uid) {
        if (c.target) this.c.events.reachedSelf(c.target);
        else c.sendHello(); // so the dialling side, this router too, learns it reached itself
        this.c.log.info({ remote: c.remote }, 'address is this router itself; not dialling it again');
        c.close('connection to self', false);
      } else {
        this.c.log.error({ remote: c.remote, name: h.name }, "peer name collision: another router uses this router's name");
        c.close(`peer name collision: ${h.name} is this router's name too`, true);
      }
      return;
    }
    const existing = this.to(h.name);
    if (existing) {
      // keep the connection dialled by the peer with the smaller name; both sides pick the same one
      const dialler = (x: Connection) => (x.outbound ? self.name : x.hello!.name);
      const keepNew = dialKept(dialler(c), dialler(existing)) || (dialler(c) === dialler(existing) && existing.hello!.uid !== h.uid);
      this.c.log.debug({ peer: h.name, kept: keepNew ? c.id : existing.id }, 'duplicate connection resolved');
      if (!keepNew) {
        c.sendHello(); // the far end applies the same rule once it knows who we are
        return c.close('duplicate connection', false);
      }
      existing.close('duplicate connection', false);
    }
    if (this.established >= this.o.maxConnections) {
      c.close(`connection limit ${this.o.maxConnections} reached`, true);
      return;
    }
    c.establish();
    this.byPeer.set(h.name, c);
    this.c.log.info({ peer: h.name, nickname: h.nickname, remote: c.remote, outbound: c.outbound }, 'connection established');
    this.c.events.established(c);
  }

  closeAll(reason: string): void {
    for (const c of this.conns) c.close(reason, false);
  }

  /** Closes the connections dialled for these targets. */
  closeTargets(addrs: readonly string[], why: string): void {
    if (addrs.length === 0) return;
    for (const c of this.conns) if (c.target && addrs.includes(c.target)) c.close(why, true);
  }
}
