/**
 * The mesh: connections between routers, gossip channels, topology and unicast routes,
 * composed from the parts beside this file (connection making, one connection, gossip, routes).
 *
 * Why it is this way:
 * - Connecting to one peer is enough: every peer gossips its entry (address, established
 *   connections), and each router dials every peer it learns of, so the mesh closes itself.
 * - The connection table (connections.ts) settles duplicates and limits; gossip (gossip.ts)
 *   moves CRDT deltas and digests; the topology (topology.ts) gives routes; connection making
 *   (connection-maker.ts) decides what to dial, from the peer sources and from gossip.
 * - Unicast messages follow the shortest path over symmetric edges, hop by hop (unicast.ts).
 * - This router's own entry (address, connections, published values) is written by own-entry.ts.
 */
import { TypedEmitter } from '../common/events';
import type { Startable } from '../common/lifecycle';
import type { Logger } from '../common/log';
import { kindOf, type Connection, type SelfIdentity } from './connection';
import { Connections } from './connections';
import type { DataKeys } from '../crypto/aead';
import { ConnectionMaker, GOSSIP_SOURCE, type TargetView } from './connection-maker';
import { encodeFrame } from './frame';
import { Gossip, RELAY_MS, type ChannelHandle, type DigestFrame, type GossipFrame, type Gossiper } from './gossip';
import type { PeerTargets } from './peer-source';
import { COMPRESSED_FRAMES, FINE_DIGESTS, type Message } from './protocol';
import { ROUTES_EVERY_MS, type RouteTable } from './routes';
import { Unicast } from './unicast';
import { DEFAULT_PLAN } from './neighbours';
import { MeshPlan } from './plan';
import { OwnEntry } from './own-entry';
import { Topology, type PeerMeta, type PeerView } from './topology';
import { tcpTransport } from './transport';
import type { ConnectionView, MeshComponents, MeshEvents, MeshInit } from './mesh-api';

export type { ConnectionView, MeshComponents, MeshEvents, MeshInit } from './mesh-api';

/** Connections a router keeps at least, whatever the neighbour plan says. */
export const MIN_DEGREE = 3;
const QUIET = new Set(['duplicate connection', 'connection to self', 'not a preferred neighbour']);
/**
 * How long (at least; up to twice, jittered) a router that has synced already waits before it
 * sends a new connection its digest; past the full-mesh size, times the peers known over that size.
 */
export const DIGEST_DELAY_MS = 1000;

/** A new neighbour gets this router's own keys written this recently (a few relay delays). */
export const RECENT_MS = 4 * RELAY_MS;

export class Mesh implements Startable, PeerTargets {
  readonly events = new TypedEmitter<MeshEvents>();
  readonly topology: Topology;
  private readonly gossip: Gossip;
  private readonly topoChannel: ChannelHandle<unknown>;
  /** This router's entry in the topology. */
  private readonly own: OwnEntry;
  private readonly maker: ConnectionMaker;
  private readonly conns: Connections;
  /** Which peers to connect to (all, or the neighbour ring's past the full-mesh size). */
  private readonly plan: MeshPlan;
  private readonly heard = new Set<string>();
  private readonly unicast: Unicast;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly later = new Set<NodeJS.Timeout>();
  private closeServer: (() => Promise<void>) | undefined;
  private stopped = false;

  constructor(
    private readonly c: MeshComponents,
    private readonly o: MeshInit,
  ) {
    this.conns = new Connections(
      {
        self: c.self,
        transport: c.transport ?? tcpTransport,
        log: c.log,
        traffic: c.traffic,
        events: {
          identified: (target, peer) => this.maker.identified(target, peer),
          reachedSelf: (target) => this.maker.isSelf(target),
          established: (conn) => this.onEstablished(conn),
          message: (conn, m) => this.onMessageFrame(conn, m),
          closed: (conn, reason, info) => this.onClosed(conn, reason, info),
        },
      },
      o,
    );
    this.topology = new Topology(c.self, () => this.topologyChanged());
    this.plan = new MeshPlan(c.self.name, this.topology, this.fullMeshUpTo, (a) => this.norm(a));
    this.gossip = new Gossip({
      broadcast: (f, skip) => this.broadcast(f, skip),
      neighbours: () => this.neighbourNames(),
      relayTargets: (from, origin, answered, neighbours) => this.topology.relayTargets(from, origin, answered, neighbours),
    });
    this.topoChannel = this.gossip.register('topology', this.topology as Gossiper<unknown>);
    this.own = new OwnEntry({ self: c.self, topology: this.topology, channel: this.topoChannel, neighbours: () => this.neighbourNames() }, o.advertise, this.fullMeshUpTo);
    this.unicast = new Unicast({
      self: c.self.name,
      nextHop: (p) => this.topology.routes.nextHop.get(p),
      writeTo: (p, m) => {
        const conn = this.conns.to(p);
        conn?.write(m);
        return conn !== undefined;
      },
    });
    this.maker = new ConnectionMaker(
      {
        dial: (addr, host, port) => this.conns.dial(addr, host, port),
        canDial: () => this.conns.canDial(),
        connectedTo: (p) => this.conns.to(p) !== undefined,
        inboundPendingFrom: (h) => this.conns.inboundPending(h) > 0,
        heardFrom: (p) => this.heard.has(p),
        isReachable: (p) => this.topology.isReachable(p),
        wanted: (t) => this.plan.wanted(t, this.conns.established, MIN_DEGREE),
      },
      { defaultPort: o.port, retryMinMs: o.retryMinMs, retryMaxMs: o.retryMaxMs, self: c.self.name },
    );
    this.own.write();
  }

  get name(): string {
    return this.c.self.name;
  }

  // ---- what other parts use -------------------------------------------------------------

  /** Registers a gossip channel (once per name) and hands back its handle. */
  channel<T>(name: string, g: Gossiper<T>): ChannelHandle<T> {
    return this.gossip.register(name, g);
  }

  /** Publishes values about this router in its topology entry. */
  publish(meta: Partial<PeerMeta>): void {
    this.own.publish(meta);
  }

  /** The address peers dial this router at (known late when the underlay is learnt from a connection). */
  setAdvertise(addr: string | undefined): void {
    this.own.setAdvertise(addr);
  }

  onMessage(type: string, h: (from: string, body: unknown) => void): void {
    this.unicast.onMessage(type, h);
  }

  /** Sends to one peer along the mesh; false when it is unreachable now (see unicast.ts). */
  send(to: string, type: string, body: unknown): boolean {
    return this.unicast.send(to, type, body);
  }

  isReachable(peer: string): boolean {
    return this.topology.isReachable(peer);
  }

  peers(): PeerView[] {
    return this.topology.peers();
  }

  get routes(): RouteTable {
    return this.topology.routes;
  }

  /** The next hop towards a peer (the peer itself when directly connected). */
  nextHop(peer: string): string | undefined {
    return this.topology.routes.nextHop.get(peer);
  }

  /** Data-path keys for `label` shared with a directly connected peer (its connection's session); undefined without a secret. */
  dataKeys(peer: string, label: string): DataKeys | undefined {
    return this.conns.to(peer)?.channel.dataKeys(label);
  }

  /** `host` and `host:port` as one target address. */
  normalise(addr: string): string {
    return this.maker.normalise(addr);
  }

  /** Drops a peer's topology entry (after `weft rmpeer`). */
  removePeer(name: string): void {
    this.topology.remove(name);
  }

  setTargets(source: string, addrs: readonly string[]): void {
    this.conns.closeTargets(this.maker.setTargets(source, addrs), 'no longer a target');
  }

  /** Stops dialling the addresses and drops their connections; returns those that were targets. */
  forget(addrs: readonly string[]): string[] {
    const done = this.maker.forget(addrs);
    this.conns.closeTargets(done, 'forgotten');
    return done;
  }

  /** The connection targets; one never reached yet is named by the peer that publishes its address. */
  targetList(): TargetView[] {
    return this.maker.list().map((t) => (t.peer ? t : { ...t, peer: this.plan.peerAt(t.addr) }));
  }

  connections(): ConnectionView[] {
    return [...this.conns.all()].map((c) => ({ outbound: c.outbound, remote: c.remote, target: c.target, established: c.established, peer: c.hello?.name, nickname: c.hello?.nickname, encrypted: c.encrypted }));
  }

  /** See ConnectionMaker.settled: whether this router has heard from every peer it was pointed at. */
  settled(): { settled: boolean; waitingFor: string[] } {
    return this.maker.settled();
  }

  // ---- life -----------------------------------------------------------------------------

  async start(): Promise<void> {
    this.closeServer = await this.conns.listen(this.o.port, this.o.listenAddr ?? '0.0.0.0');
    const every = (ms: number, f: () => void) => {
      const t = setInterval(f, ms);
      t.unref();
      this.timers.push(t);
    };
    every(250, () => !this.stopped && this.maker.tick());
    every(this.o.heartbeatMs, () => this.heartbeat());
    every(this.o.refreshMs, () => {
      const d = new Map<boolean, DigestFrame>();
      for (const c of this.conns.all()) {
        if (!c.established) continue;
        const fine = c.speaks(FINE_DIGESTS);
        if (!d.has(fine)) d.set(fine, this.gossip.digest(fine));
        c.write(d.get(fine)!);
      }
    });
    this.maker.tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    for (const t of this.later) clearTimeout(t);
    this.gossip.stop();
    clearTimeout(this.topoTimer);
    this.conns.closeAll('router stopping');
    await this.closeServer?.();
  }

  // ---- connections ----------------------------------------------------------------------

  private onEstablished(c: Connection): void {
    const h = c.hello!;
    if (c.target) this.maker.established(c.target, h.name);
    // what each side lacks comes in answer to its digest; `sync` marks the answer complete. A
    // router that has synced with someone already waits a moment (jittered) before it asks: the
    // deltas in flight usually bring both sides level meanwhile, so the exchange costs two
    // digests instead of whole buckets (answered at once, joins in a forming mesh cost N^3);
    // past the full-mesh size the wait grows with the peers known (deltas take longer to
    // cross a larger mesh, and a forming one would otherwise answer whole states to each other)
    if (this.heard.size === 0) c.write(this.gossip.digest(c.speaks(FINE_DIGESTS)));
    else {
      const t = setTimeout(() => {
        this.later.delete(t);
        if (c.established && !this.stopped) c.write(this.gossip.digest(c.speaks(FINE_DIGESTS)));
      }, DIGEST_DELAY_MS * this.pastFullMesh() * (1 + Math.random()));
      this.later.add(t);
    }
    const first = this.conns.established === 1;
    this.own.write();
    // a router's first connection gets its own keys at once: what it gossiped before had no
    // one to go to (its entry went nowhere), and the digest that would bring them may wait a
    // second or more at the other end
    if (first) c.write({ t: 'gossip', ch: this.topoChannel.name, data: this.topology.own() });
    else {
      // what it changed just before: the routers relaying those changes may see this connection
      // by then and leave them to us (see Topology.ownSince); without this, a forming mesh
      // lost them until a digest, which answers each missed key with its whole bucket
      const recent = this.topology.ownSince(Date.now() - RECENT_MS);
      if (recent) c.write({ t: 'gossip', ch: this.topoChannel.name, data: recent });
    }
    this.events.emit('connection', h.name, c.localAddress);
  }

  private onMessageFrame(c: Connection, m: Message): void {
    switch (m.t) {
      case 'gossip':
        this.gossip.receive(m as GossipFrame, c.hello!.name);
        this.own.reassert();
        break;
      case 'digest':
        for (const f of this.gossip.answer(m)) c.write(f);
        c.write({ t: 'sync' });
        break;
      case 'msg':
        this.unicast.receive(m, c.hello!.name);
        break;
      case 'sync':
        this.heard.add(c.hello!.name);
        this.events.emit('synced', c.hello!.name);
        break;
      case 'bye':
        this.c.log.info({ peer: c.hello?.name, reason: m.reason }, 'peer closed the connection');
        break;
    }
  }

  private onClosed(c: Connection, reason: string, info: { wasEstablished: boolean; refused: boolean }): void {
    const quiet = QUIET.has(reason);
    if (c.target) this.maker.closed(c.target, reason, quiet);
    if (info.wasEstablished) {
      this.c.log.info({ peer: c.hello?.name, remote: c.remote, reason }, 'connection closed');
      if (!this.stopped) this.own.write();
      this.events.emit('disconnection', c.hello?.name);
    }
  }

  private heartbeat(): void {
    const now = Date.now();
    let established = this.conns.established;
    for (const c of this.conns.all()) {
      if (!c.established) continue;
      if (now - c.lastRecv > 3 * this.o.heartbeatMs) c.close(`no heartbeat for ${Math.round((now - c.lastRecv) / 1000)} s`, true);
      else if (this.plan.large && established > MIN_DEGREE && now - c.establishedAt > (this.o.pruneAfterMs ?? 10_000) && !this.plan.keeps(c.hello!.name)) {
        // a large mesh: neither end prefers this connection, and both compute the same
        c.close('not a preferred neighbour', false);
        established--;
      } else c.write({ t: 'hb' });
    }
  }

  // ---- gossip and unicast ---------------------------------------------------------------

  private broadcast(f: GossipFrame, skip?: (peer: string) => boolean): void {
    // encoded once per kind of reader: compressed for peers that read it, plain for the others
    const frames: [Buffer?, Buffer?] = [];
    const kind = kindOf(f);
    for (const c of this.conns.all()) {
      if (!c.established || (skip && skip(c.hello!.name))) continue;
      const z = c.speaks(COMPRESSED_FRAMES) ? 1 : 0;
      c.writeEncoded((frames[z] ??= encodeFrame(f, z === 1)), kind);
    }
  }

  private *neighbourNames(): Iterable<string> {
    for (const c of this.conns.all()) if (c.established) yield c.hello!.name;
  }

  /** The largest mesh in which every router connects to every other. */
  private get fullMeshUpTo(): number {
    return this.o.fullMeshUpTo ?? DEFAULT_PLAN.fullMeshUpTo;
  }

  /** How many times the full-mesh size the peers known are (1 at or under it): what waits past it scale by. */
  private pastFullMesh(): number {
    return Math.max(1, this.topology.size / this.fullMeshUpTo);
  }

  private topoTimer: NodeJS.Timeout | undefined;
  private lastTable: RouteTable | undefined;
  private lastReachable: ReadonlySet<string> = new Set();
  private readonly normalised = new Map<string, string>();

  /** Topology changes come in bursts: react once per burst, on fresh routes. */
  private topologyChanged(): void {
    if (this.topoTimer || this.stopped) return;
    this.topoTimer = setTimeout(() => {
      this.topoTimer = undefined;
      this.onTopology();
    }, this.topology.routing.everyMs);
  }

  /** `maker.normalise`, remembered (peers' addresses are read on every reaction). */
  private norm(addr: string): string {
    let n = this.normalised.get(addr);
    if (n === undefined) this.normalised.set(addr, (n = this.maker.normalise(addr)));
    return n;
  }

  private onTopology(): void {
    const table = this.topology.routing.refresh();
    const now = table.reachable;
    if (table !== this.lastTable) {
      this.lastTable = table;
      const before = this.lastReachable;
      this.lastReachable = now;
      if (before.size !== now.size || [...now].some((n) => !before.has(n))) this.events.emit('reachability', now);
    }
    // the plan follows the peers known (their entries spread faster than routes, so a forming
    // mesh plans for its size early), or the peers this router was pointed at
    this.plan.update(Math.max(this.topology.size, this.maker.explicitCount() + 1, this.topology.largestPublished));
    this.own.publishPeersKnown();
    // past the full-mesh size, routes are recomputed less often in proportion (each is a walk of
    // the whole graph; 1,000 routers reacting 20 times a second each is most of a forming mesh's CPU)
    this.topology.routing.everyMs = ROUTES_EVERY_MS * this.pastFullMesh();
    // dial peers we learn of, as the seeds' "connect to one, join them all": in a full mesh all
    // those reachable, in a large one the neighbours the plan gives (reachable or not yet)
    const planned = this.plan.toDial();
    for (const name of planned ?? this.topology.peerNames()) {
      if (name === this.name || (!planned && !now.has(name))) continue;
      const addr = this.topology.addrOf(name);
      if (!addr) continue;
      if (!this.maker.has(this.norm(addr), true) && !this.conns.to(name)) this.maker.learn(addr, name);
    }
    this.events.emit('topology');
  }
}

export { GOSSIP_SOURCE };
