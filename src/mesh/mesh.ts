/**
 * The mesh: TCP connections between routers, gossip, topology and routes.
 *
 * Why it is this way:
 * - Connecting to one peer is enough: every peer gossips its entry (address, established
 *   connections), and each router dials every peer it learns of, so the mesh closes itself.
 * - Two routers that dial each other at once end up with two connections; both sides keep
 *   the one dialled by the peer with the smaller name, so they agree without talking.
 * - Gossip channels are versioned maps (crdt.ts). A change is sent as a delta, batched for a
 *   few milliseconds; a peer passes on what was new to it, so state floods a partially
 *   connected mesh too. New connections get the full state, and all of it is re-sent
 *   periodically to heal anything lost.
 * - Unicast messages follow the shortest path over established connections that both ends
 *   report (symmetric edges), hop by hop.
 */
import { EventEmitter } from 'node:events';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { combine, VersionedMap, type MapData } from '../common/crdt';
import { encodeFrame, FrameError, FrameReader } from './frame';
import { byeSchema, helloSchema, messageSchema, PROTOCOL, PROTOCOL_MAX, PROTOCOL_MIN, type Hello } from './protocol';
import type { Logger } from '../common/log';

/** A peer's own entry in the topology channel. */
export interface PeerEntry {
  name: string;
  nickname: string;
  uid: string;
  /** ip:port others can dial, when known. */
  addr?: string;
  /** Peers it has established connections to. */
  conns: string[];
  /** Data other parts of the router publish about this peer (bridge MAC, underlay IP, ...). */
  meta: Record<string, unknown>;
}

/** A gossip channel: a CRDT the mesh spreads. */
export interface GossipChannel {
  readonly name: string;
  /** The whole state, for new peers and the periodic refresh. */
  full(): MapData<unknown>;
  /** Merges what a peer sent; returns the delta that was new here, or undefined. */
  merge(data: MapData<unknown>, from: string): MapData<unknown> | undefined;
}

export interface MeshOptions {
  name: string;
  nickname: string;
  uid: string;
  port: number;
  /** Address to listen on (default all). */
  listenAddr?: string;
  /** ip:port this router is reached at, published to peers. */
  advertise?: string;
  targets: string[];
  maxConnections?: number;
  /** Heartbeat interval; a connection silent for three intervals is dropped. */
  heartbeatMs?: number;
  /** Full-state gossip interval. */
  refreshMs?: number;
  /** First retry delay and its cap. */
  retryMinMs?: number;
  retryMaxMs?: number;
  log: Logger;
  /** Counts messages (by gossip channel or message type) and bytes, for metrics. */
  onTraffic?: (dir: 'in' | 'out', kind: string, bytes: number) => void;
}

function kindOf(msg: unknown): string {
  const m = msg as { t?: string; ch?: string };
  return m.t === 'gossip' ? `gossip:${m.ch}` : (m.t ?? 'unknown');
}

export type TargetState = 'connecting' | 'established' | 'retrying' | 'failed' | 'self';

interface Target {
  addr: string;
  /** From the command line or `weft connect` (kept), or learnt from gossip (dropped when the peer goes). */
  explicit: boolean;
  state: TargetState;
  attempts: number;
  nextTry: number;
  lastError?: string;
  /** The peer found at this address last time. */
  peer?: string;
}

export interface Conn {
  id: number;
  socket: Socket;
  outbound: boolean;
  remote: string;
  target?: Target;
  established: boolean;
  hello?: Hello;
  lastRecv: number;
  reader: FrameReader;
  closed: boolean;
}

const BATCH_MS = 20;

export function splitHostPort(addr: string, defaultPort: number): { host: string; port: number } {
  const m = /^(.*?)(?::(\d+))?$/.exec(addr)!;
  return { host: m[1]!, port: m[2] ? Number(m[2]) : defaultPort };
}

export class Mesh extends EventEmitter {
  readonly topology = new VersionedMap<PeerEntry>();
  private readonly channels = new Map<string, GossipChannel>();
  private readonly handlers = new Map<string, (from: string, body: unknown) => void>();
  private readonly targets = new Map<string, Target>();
  private readonly conns = new Set<Conn>();
  private readonly pending = new Map<string, MapData<unknown>>();
  private batchTimer: NodeJS.Timeout | undefined;
  private server: Server | undefined;
  private timers: NodeJS.Timeout[] = [];
  private nextId = 1;
  private routes = new Map<string, string>();
  private reachable = new Set<string>();
  private stopped = false;
  private meta: Record<string, unknown> = {};

  constructor(readonly o: MeshOptions) {
    super();
    for (const t of o.targets) this.addTarget(t, true);
    this.channels.set('topology', {
      name: 'topology',
      full: () => this.topology.toData(),
      merge: (data) => {
        // a peer's own entry is its own to write: never take a stale copy of ours
        const own = data[this.o.name] as { uid?: string } | undefined;
        if (own && own.uid !== this.o.uid) delete data[this.o.name];
        const delta = this.topology.merge(data as MapData<PeerEntry>);
        if (delta) this.onTopologyChange();
        return delta;
      },
    });
    this.publishSelf();
  }

  get name(): string {
    return this.o.name;
  }

  // ---- gossip ---------------------------------------------------------------------------

  /** Adds a channel; its deltas go out through `gossip`. */
  register(ch: GossipChannel): void {
    this.channels.set(ch.name, ch);
  }

  /** Sends a delta of a channel to every peer (batched). */
  gossip(channel: string, delta: MapData<unknown>): void {
    const prev = this.pending.get(channel);
    this.pending.set(channel, prev ? combine(prev, delta) : delta);
    this.batchTimer ??= setTimeout(() => this.flush(), BATCH_MS);
  }

  private flush(): void {
    this.batchTimer = undefined;
    for (const [ch, data] of this.pending) this.broadcastFrame({ t: 'gossip', ch, data });
    this.pending.clear();
  }

  private sendFull(c: Conn): void {
    for (const ch of this.channels.values()) this.write(c, { t: 'gossip', ch: ch.name, data: ch.full() });
  }

  /** Publishes a value about this peer in its topology entry. */
  setMeta(key: string, value: unknown): void {
    if (JSON.stringify(this.meta[key]) === JSON.stringify(value)) return;
    this.meta = { ...this.meta, [key]: value };
    this.publishSelf();
  }

  private publishSelf(): void {
    const conns = [...this.conns].filter((c) => c.established && c.hello).map((c) => c.hello!.name);
    const e = this.topology.set(this.o.name, {
      name: this.o.name,
      nickname: this.o.nickname,
      uid: this.o.uid,
      addr: this.o.advertise,
      conns: [...new Set(conns)].sort(),
      meta: this.meta,
    });
    this.onTopologyChange();
    this.gossip('topology', { [this.o.name]: e });
  }

  // ---- unicast --------------------------------------------------------------------------

  onMessage(type: string, h: (from: string, body: unknown) => void): void {
    this.handlers.set(type, h);
  }

  /** Sends to one peer along the mesh; false when it is unreachable now. */
  send(to: string, type: string, body: unknown): boolean {
    if (to === this.o.name) {
      queueMicrotask(() => this.handlers.get(type)?.(to, body));
      return true;
    }
    return this.forward({ t: 'msg', from: this.o.name, to, type, ttl: 16, body });
  }

  private forward(m: { t: 'msg'; from: string; to: string; type: string; ttl: number; body: unknown }): boolean {
    const hop = this.routes.get(m.to);
    const c = hop ? this.connTo(hop) : undefined;
    if (!c || m.ttl <= 0) return false;
    this.write(c, { ...m, ttl: m.ttl - 1 });
    return true;
  }

  private connTo(peer: string): Conn | undefined {
    for (const c of this.conns) if (c.established && c.hello?.name === peer) return c;
    return undefined;
  }

  // ---- topology and routes --------------------------------------------------------------

  private onTopologyChange(): void {
    // symmetric edges only: both ends report the connection
    const adj = new Map<string, string[]>();
    for (const e of this.topology.values()) {
      adj.set(
        e.name,
        e.conns.filter((n) => this.topology.get(n)?.conns.includes(e.name)),
      );
    }
    const routes = new Map<string, string>();
    const seen = new Set([this.o.name]);
    const queue: [string, string | undefined][] = [[this.o.name, undefined]];
    while (queue.length) {
      const [n, first] = queue.shift()!;
      for (const m of adj.get(n) ?? []) {
        if (seen.has(m)) continue;
        seen.add(m);
        const hop = first ?? m;
        routes.set(m, hop);
        queue.push([m, hop]);
      }
    }
    const before = this.reachable;
    this.routes = routes;
    this.reachable = seen;
    // dial peers we learn of, as the seeds' "connect to one, join them all"
    for (const e of this.topology.values()) {
      if (e.name === this.o.name || !e.addr || !seen.has(e.name)) continue;
      if (!this.connTo(e.name) && !this.targets.has(e.addr)) this.addTarget(e.addr, false);
    }
    const changed = before.size !== seen.size || [...seen].some((n) => !before.has(n));
    if (changed) this.emit('reachability', seen);
    this.emit('topology');
  }

  /** Peers reachable now (this router included). */
  isReachable(peer: string): boolean {
    return this.reachable.has(peer);
  }

  peers(): (PeerEntry & { reachable: boolean })[] {
    return this.topology.values().map((e) => ({ ...e, reachable: this.reachable.has(e.name) }));
  }

  /** Forgets a peer's topology entry (after `weft rmpeer`). */
  removePeer(name: string): void {
    this.topology.delete(name);
    this.onTopologyChange();
  }

  // ---- connections ----------------------------------------------------------------------

  async start(): Promise<void> {
    const server = createServer((s) => this.accept(s));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.o.port, this.o.listenAddr ?? '0.0.0.0', () => resolve());
    });
    const hb = this.o.heartbeatMs ?? 5000;
    this.timers.push(setInterval(() => this.tick(), 250));
    this.timers.push(setInterval(() => this.heartbeat(hb), hb));
    this.timers.push(setInterval(() => this.conns.forEach((c) => c.established && this.sendFull(c)), this.o.refreshMs ?? 30_000));
    for (const t of this.timers) t.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    if (this.batchTimer) clearTimeout(this.batchTimer);
    for (const c of this.conns) this.close(c, 'router stopping', false);
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  /** Adds addresses to dial (kept until forgotten). */
  connect(addrs: string[]): void {
    for (const a of addrs) this.addTarget(a, true);
  }

  /** Stops dialling addresses and drops their connections. */
  forget(addrs: string[]): string[] {
    const done: string[] = [];
    for (const a of addrs) {
      const key = this.normalise(a);
      const t = this.targets.get(key);
      if (!t) continue;
      this.targets.delete(key);
      done.push(key);
      for (const c of this.conns) if (c.target === t) this.close(c, 'forgotten', true);
    }
    return done;
  }

  private normalise(addr: string): string {
    const { host, port } = splitHostPort(addr, this.o.port);
    return `${host}:${port}`;
  }

  private addTarget(addr: string, explicit: boolean): void {
    const key = this.normalise(addr);
    const t = this.targets.get(key);
    if (t) {
      t.explicit ||= explicit;
      if (explicit && (t.state === 'retrying' || t.state === 'failed')) t.nextTry = 0;
      return;
    }
    this.targets.set(key, { addr: key, explicit, state: 'retrying', attempts: 0, nextTry: 0 });
  }

  /** Explicit targets and their state. */
  targetList(): { addr: string; state: TargetState; explicit: boolean; error?: string; peer?: string }[] {
    return [...this.targets.values()].map((t) => ({ addr: t.addr, state: t.state, explicit: t.explicit, error: t.lastError, peer: t.peer }));
  }

  connections(): Conn[] {
    return [...this.conns];
  }

  private tick(): void {
    if (this.stopped) return;
    const now = Date.now();
    for (const t of this.targets.values()) {
      if (t.state === 'self' || t.state === 'connecting' || t.state === 'established') continue;
      if (t.peer && this.connTo(t.peer)) {
        t.state = 'established';
        continue;
      }
      // a learnt address of a peer that went away is not worth dialling forever
      if (!t.explicit && t.peer && !this.reachable.has(t.peer) && t.attempts > 8) {
        this.targets.delete(t.addr);
        continue;
      }
      if (t.nextTry <= now) this.dial(t);
    }
  }

  private dial(t: Target): void {
    const max = this.o.maxConnections ?? 200;
    if (this.conns.size >= max) return;
    t.state = 'connecting';
    t.attempts++;
    const { host, port } = splitHostPort(t.addr, this.o.port);
    const socket = connect({ host, port });
    socket.setNoDelay(true);
    const c = this.track(socket, true, t.addr, t);
    const timer = setTimeout(() => this.close(c, 'connect timeout', true), 5000);
    socket.once('connect', () => {
      clearTimeout(timer);
      this.sendHello(c);
    });
    socket.once('close', () => clearTimeout(timer));
  }

  private accept(socket: Socket): void {
    const max = this.o.maxConnections ?? 200;
    socket.setNoDelay(true);
    const c = this.track(socket, false, `${socket.remoteAddress}:${socket.remotePort}`);
    if (this.conns.size > max) {
      this.close(c, `connection limit ${max} reached`, true);
      return;
    }
    this.sendHello(c);
  }

  private track(socket: Socket, outbound: boolean, remote: string, target?: Target): Conn {
    const c: Conn = { id: this.nextId++, socket, outbound, remote, target, established: false, lastRecv: Date.now(), reader: new FrameReader(), closed: false };
    this.conns.add(c);
    socket.on('data', (d: Buffer) => this.receive(c, d));
    socket.on('error', (e) => this.close(c, e.message, false));
    socket.on('close', () => this.close(c, 'closed by peer', false));
    return c;
  }

  private sendHello(c: Conn): void {
    this.write(c, { t: 'hello', proto: PROTOCOL, min: PROTOCOL_MIN, max: PROTOCOL_MAX, name: this.o.name, nickname: this.o.nickname, uid: this.o.uid });
  }

  private write(c: Conn, msg: unknown): void {
    if (c.closed || c.socket.destroyed) return;
    const frame = encodeFrame(msg);
    this.o.onTraffic?.('out', kindOf(msg), frame.length);
    c.socket.write(frame);
  }

  private broadcastFrame(msg: unknown): void {
    const frame = encodeFrame(msg);
    for (const c of this.conns) {
      if (!c.established || c.closed) continue;
      this.o.onTraffic?.('out', kindOf(msg), frame.length);
      c.socket.write(frame);
    }
  }

  private receive(c: Conn, chunk: Buffer): void {
    c.lastRecv = Date.now();
    this.o.onTraffic?.('in', 'bytes', chunk.length);
    try {
      for (const raw of c.reader.push(chunk)) {
        if (c.closed) return;
        this.o.onTraffic?.('in', kindOf(raw), 0);
        if (!c.hello) {
          const bye = byeSchema.safeParse(raw);
          // refused before the handshake (connection limit, name clash): keep the reason
          if (bye.success) this.fail(c, `refused by ${c.remote}: ${bye.data.reason}`, true);
          else this.onHello(c, raw);
          continue;
        }
        const parsed = messageSchema.safeParse(raw);
        if (!parsed.success) throw new FrameError(`malformed ${String(raw.t)} message`);
        const m = parsed.data;
        switch (m.t) {
          case 'hb':
            break;
          case 'bye':
            this.o.log.info({ peer: c.hello.name, reason: m.reason }, 'peer closed the connection');
            break;
          case 'gossip': {
            const ch = this.channels.get(m.ch);
            if (!ch) break;
            const delta = ch.merge(m.data as MapData<unknown>, c.hello.name);
            if (delta) this.gossip(m.ch, delta);
            break;
          }
          case 'msg':
            if (m.to === this.o.name) this.handlers.get(m.type)?.(m.from, m.body);
            else this.forward(m);
            break;
          case 'hello':
            throw new FrameError('second hello');
        }
      }
    } catch (e) {
      const why = e instanceof FrameError ? `protocol error: ${e.message}` : `error handling a message: ${(e as Error).message}`;
      this.o.log.warn({ remote: c.remote, peer: c.hello?.name, err: why }, 'dropping connection');
      this.close(c, why, true);
    }
  }

  private onHello(c: Conn, raw: Record<string, unknown>): void {
    const p = helloSchema.safeParse(raw);
    if (!p.success || p.data.proto !== PROTOCOL) throw new FrameError('not a weft peer (bad hello)');
    const h = p.data;
    if (h.max < PROTOCOL_MIN || h.min > PROTOCOL_MAX) {
      this.fail(c, `protocol versions ${h.min}..${h.max} do not overlap ours ${PROTOCOL_MIN}..${PROTOCOL_MAX}`, false);
      return;
    }
    if (h.name === this.o.name) {
      if (h.uid === this.o.uid) {
        if (c.target) c.target.state = 'self';
        this.o.log.info({ remote: c.remote }, 'address is this router itself; not dialling it again');
        this.close(c, 'connection to self', false, true);
      } else {
        this.o.log.error({ remote: c.remote, name: h.name }, 'peer name collision: another router uses this router\'s name');
        this.fail(c, `peer name collision: ${h.name} is this router's name too`, true);
      }
      return;
    }
    c.hello = h;
    if (c.target) c.target.peer = h.name;
    const existing = [...this.conns].find((o) => o !== c && o.established && o.hello?.name === h.name);
    if (existing) {
      // keep the connection dialled by the peer with the smaller name; both sides pick the same one
      const dialler = (x: Conn) => (x.outbound ? this.o.name : x.hello!.name);
      const keepNew = dialler(c) < dialler(existing) || (dialler(c) === dialler(existing) && existing.hello!.uid !== h.uid);
      const loser = keepNew ? existing : c;
      this.o.log.debug({ peer: h.name, kept: keepNew ? c.id : existing.id }, 'duplicate connection resolved');
      if (loser.target) loser.target.state = 'established';
      this.close(loser, 'duplicate connection', false, true);
      if (!keepNew) return;
    }
    c.established = true;
    if (c.target) {
      c.target.state = 'established';
      c.target.attempts = 0;
      c.target.lastError = undefined;
    }
    this.o.log.info({ peer: h.name, nickname: h.nickname, remote: c.remote, outbound: c.outbound }, 'connection established');
    this.sendFull(c);
    this.publishSelf();
    this.emit('connection', h.name);
  }

  private fail(c: Conn, reason: string, retry: boolean): void {
    if (c.target) c.target.lastError = reason;
    this.close(c, reason, retry);
  }

  private close(c: Conn, reason: string, retry: boolean, quiet = false): void {
    if (c.closed) return;
    c.closed = true;
    if (!c.socket.destroyed) {
      try {
        if (c.hello || retry) c.socket.write(encodeFrame({ t: 'bye', reason }));
      } catch {
        /* closing anyway */
      }
      c.socket.end();
      setTimeout(() => c.socket.destroy(), 200).unref();
    }
    this.conns.delete(c);
    const t = c.target;
    if (t && t.state !== 'self' && !(t.state === 'established' && t.peer && this.connTo(t.peer))) {
      if (!quiet) t.lastError = reason;
      if (this.targets.has(t.addr)) this.schedule(t);
    }
    if (c.established) {
      c.established = false;
      this.o.log.info({ peer: c.hello?.name, remote: c.remote, reason }, 'connection closed');
      if (!this.stopped) this.publishSelf();
      this.emit('disconnection', c.hello?.name);
    }
  }

  private schedule(t: Target): void {
    const min = this.o.retryMinMs ?? 1000;
    const max = this.o.retryMaxMs ?? 360_000;
    const base = Math.min(max, min * 1.5 ** Math.max(0, t.attempts - 1));
    const jitter = 0.75 + Math.random() * 0.5;
    t.nextTry = Date.now() + base * jitter;
    t.state = 'retrying';
  }

  private heartbeat(hb: number): void {
    const now = Date.now();
    for (const c of this.conns) {
      if (now - c.lastRecv > 3 * hb) this.close(c, `no heartbeat for ${Math.round((now - c.lastRecv) / 1000)} s`, true);
      else if (c.hello) this.write(c, { t: 'hb' });
    }
  }
}
