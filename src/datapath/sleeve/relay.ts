/**
 * The sleeve's userspace half: datagrams between routers (over UDP, or a TCP stream per hop
 * when `streamPort` is set: stream.ts), sealing, relaying, and hand-over to the
 * local kernel VXLAN. No kernel state is made here (see kernel.ts), so this runs and is
 * tested in-process on loopback.
 *
 * Why it is this way: Node pays per datagram, not per byte, so the hot path does one decode,
 * one AEAD and one gathered send per datagram and nothing else (no per-datagram logging, no
 * allocation beyond the cipher's); the kernel VXLAN's datagrams are large (see the inner MTU in
 * sleeve.ts), which is what makes a userspace path fast enough.
 *
 * Per direct neighbour there is one tx key (its counter is the nonce) and up to two rx keys,
 * the current session's and the one before, so datagrams in flight across a reconnection are
 * still accepted; each rx key has its own replay window. A datagram whose destination is
 * another router is opened, then sealed again for the next hop (keys are per hop).
 */
import { createSocket, type Socket } from 'node:dgram';
import { openSealed, sealParts, type DataKeys } from '../../crypto/aead';
import { ReplayWindow } from '../../crypto/replay';
import { contains, parseIPv4, type Cidr } from '../../common/ip';
import type { Logger } from '../../common/log';
import { SysError } from '../../common/errors';
import { StreamCarrier, type StreamCounters } from './stream';
import { decodeHeader, decodeInner, encodeHeader, encodeInner, HEADER_BYTES, INNER_BYTES, Kind, MAX_HOPS, NameCodec, type Inner } from './wire';

/** How to reach other routers: the mesh's unicast routes and its peers' underlay addresses. */
export interface SleeveRoutes {
  /** Next hop towards `peer`: the peer itself when directly connected, the router to relay through otherwise; undefined when unreachable. */
  nextHop(peer: string): string | undefined;
  /** Where a directly connected peer's sleeve listens: its underlay address (ports: this router's own, unless given). */
  endpoint(peer: string): { ip: string; port?: number; streamPort?: number } | undefined;
}

/** The data-path keys of each directly connected peer, from its mesh connection's control session. */
export interface SleeveKeys {
  /** `deriveDataKeys(session, 'sleeve')` of the connection to `peer`; undefined when there is none (or it is plain). */
  dataKeys(peer: string): DataKeys | undefined;
}

export type DropReason =
  | 'malformed'
  | 'unknown-key'
  | 'replay'
  | 'auth'
  | 'plain-refused'
  | 'no-route'
  | 'no-keys'
  | 'hops'
  | 'loop'
  | 'unknown-origin'
  | 'send-error';

/** Traffic on the wire with one direct neighbour. */
export interface PeerTraffic {
  txDatagrams: number;
  txBytes: number;
  rxDatagrams: number;
  rxBytes: number;
}

/** Counters for metrics: `dropped.auth` are decryption failures, `dropped.replay` replays. */
export interface SleeveCounters {
  peers: Map<string, PeerTraffic>;
  /** Frames handed to the local kernel VXLAN. */
  delivered: { datagrams: number; bytes: number };
  /** Datagrams forwarded for other routers. */
  relayed: { datagrams: number; bytes: number };
  dropped: Record<DropReason, number>;
  /** The stream carrier's frames, and its connections closed as stalled or malformed (absent over UDP only). */
  stream?: StreamCounters;
}

export interface RelayComponents {
  routes: SleeveRoutes;
  keys: SleeveKeys;
  log: Logger;
}

export interface RelayOptions {
  /** This router's peer name. */
  self: string;
  /** UDP port routers exchange sleeve datagrams on. */
  port: number;
  /** Address the UDP socket binds (default all). */
  bindAddress?: string;
  /** TCP port of the stream carrier (stream.ts); undefined: datagrams over UDP only. */
  streamPort?: number;
  /** A stream connection with a datagram unacknowledged for this long is closed (default 1000 ms; stream.ts). */
  streamStallMs?: number;
  /** Seal datagrams (a shared secret is set). */
  encrypted: boolean;
  /** Underlay networks whose hops are sent, and accepted, unsealed even when encrypted. */
  trusted: readonly Cidr[];
  /** UDP port of the local kernel VXLAN device, on 127.0.0.1. */
  vxlanPort: number;
  /** Size of a probe's body: as large as the largest frame carried, so a probe tests that size. */
  probeBytes: number;
  /** How long a neighbour's previous rx key stays valid after a new session replaced it (default 5 s). */
  keyGraceMs?: number;
}

interface RxKey {
  id: number;
  key: Buffer;
  window: ReplayWindow;
  /** Set once superseded: accepted until then (datagrams in flight across a reconnection). */
  until?: number;
}

const SOCKET_BUFFER = 4 << 20;
const LOG_EVERY_MS = 10_000;

export class SleeveRelay {
  private sock: Socket | undefined;
  private readonly stream: StreamCarrier | undefined;
  private readonly locals = new Map<string, Socket>();
  private readonly rx = new Map<string, { current: DataKeys; keys: RxKey[] }>();
  private readonly innerTo = new Map<string, Buffer>();
  private readonly trustCache = new Map<string, boolean>();
  private readonly names = new NameCodec();
  private readonly probes = new Map<number, () => void>();
  private nextProbe = 1;
  private readonly lastLog = new Map<string, number>();
  readonly counters: SleeveCounters = {
    peers: new Map(),
    delivered: { datagrams: 0, bytes: 0 },
    relayed: { datagrams: 0, bytes: 0 },
    dropped: { malformed: 0, 'unknown-key': 0, replay: 0, auth: 0, 'plain-refused': 0, 'no-route': 0, 'no-keys': 0, hops: 0, loop: 0, 'unknown-origin': 0, 'send-error': 0 },
  };

  constructor(
    private readonly c: RelayComponents,
    readonly o: RelayOptions,
  ) {
    this.names.encode(o.self);
    if (o.streamPort !== undefined) {
      this.stream = new StreamCarrier({ port: o.streamPort, bindAddress: o.bindAddress, stallMs: o.streamStallMs, log: c.log, onFrame: (d, from) => this.fromUnderlay(d, from) });
      this.counters.stream = this.stream.counters;
    }
  }

  async start(): Promise<void> {
    if (this.sock) return;
    const s = createSocket({ type: 'udp4', recvBufferSize: SOCKET_BUFFER, sendBufferSize: SOCKET_BUFFER });
    s.on('message', (d, r) => this.fromUnderlay(d, r.address));
    await bind(s, this.o.port, this.o.bindAddress ?? '0.0.0.0');
    s.on('error', (e) => this.drop('send-error', undefined, e.message));
    try {
      await this.stream?.start();
    } catch (e) {
      s.close();
      throw e;
    }
    this.sock = s;
  }

  async stop(): Promise<void> {
    for (const p of [...this.locals.keys()]) await this.detach(p);
    const s = this.sock;
    this.sock = undefined;
    await this.stream?.stop();
    if (s) await new Promise<void>((r) => s.close(() => r()));
    for (const done of this.probes.values()) done();
  }

  /** Starts carrying frames the kernel sends to `peer`: they arrive on 127.0.0.1:`port`, and frames from it are handed to the kernel from there. */
  async attach(peer: string, port: number): Promise<void> {
    if (this.locals.has(peer)) return;
    this.names.encode(peer);
    const s = createSocket({ type: 'udp4', recvBufferSize: SOCKET_BUFFER, sendBufferSize: SOCKET_BUFFER });
    s.on('message', (m) => this.fromKernel(peer, m));
    await bind(s, port, '127.0.0.1');
    s.on('error', (e) => this.drop('send-error', peer, e.message));
    this.locals.set(peer, s);
  }

  async detach(peer: string): Promise<void> {
    const s = this.locals.get(peer);
    this.locals.delete(peer);
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }

  /** Undefined while the sockets are open; otherwise which one is not. */
  get closed(): string | undefined {
    if (!this.sock) return `sleeve UDP port ${this.o.port} is not open`;
    if (this.stream && !this.stream.listening) return `sleeve TCP port ${this.o.streamPort} is not open`;
    return undefined;
  }

  /** Whether datagrams to `ip` go over the stream carrier now. */
  streamsTo(ip: string, port = this.o.streamPort): boolean {
    return port !== undefined && (this.stream?.connected(ip, port) ?? false);
  }

  attached(): string[] {
    return [...this.locals.keys()];
  }

  /** Whether the hop to `ip` is sealed. */
  sealsTo(ip: string): boolean {
    return this.o.encrypted && !this.trusted(ip);
  }

  /**
   * Sends a full-size probe to `peer` along the route and waits for its echo: proves the route,
   * the keys of every hop and the underlay's handling of the largest datagrams. Never rejects.
   */
  async probe(peer: string, timeoutMs = 1000, tries = 2): Promise<boolean> {
    for (let t = 0; t < tries && this.sock; t++) {
      const id = this.nextProbe++ >>> 0;
      const body = Buffer.alloc(Math.max(4, this.o.probeBytes));
      body.writeUInt32BE(id, 0);
      const ok = await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => finish(false), timeoutMs);
        const finish = (v: boolean) => {
          clearTimeout(timer);
          this.probes.delete(id);
          resolve(v);
        };
        this.probes.set(id, () => finish(this.sock !== undefined));
        if (!this.route({ kind: Kind.ProbeRequest, hops: MAX_HOPS, origin: this.o.self, destination: peer }, body)) finish(false);
      });
      if (ok) return true;
    }
    return false;
  }

  // ---- hot path ------------------------------------------------------------------------

  /** A VXLAN datagram the kernel sent towards `peer`. */
  private fromKernel(peer: string, m: Buffer): void {
    let inner = this.innerTo.get(peer);
    if (!inner) {
      inner = encodeInner(this.names, { kind: Kind.Frame, hops: MAX_HOPS, origin: this.o.self, destination: peer });
      this.innerTo.set(peer, inner);
    }
    const hop = this.c.routes.nextHop(peer);
    if (hop === undefined) return this.drop('no-route', peer);
    this.transmit(hop, inner, m);
  }

  private route(i: Inner, body: Buffer): boolean {
    const hop = this.c.routes.nextHop(i.destination);
    if (hop === undefined) {
      this.drop('no-route', i.destination);
      return false;
    }
    return this.transmit(hop, encodeInner(this.names, i), body);
  }

  private transmit(hop: string, inner: Buffer, body: Buffer): boolean {
    const sock = this.sock;
    const ep = this.c.routes.endpoint(hop);
    if (!sock || !ep) {
      this.drop('no-route', hop);
      return false;
    }
    let parts: Buffer[];
    if (this.sealsTo(ep.ip)) {
      const keys = this.c.keys.dataKeys(hop);
      if (!keys) {
        this.drop('no-keys', hop);
        return false;
      }
      const counter = keys.nextCounter();
      const header = encodeHeader(this.names, this.o.self, true, keys.txId, counter);
      parts = [header, ...sealParts(keys.tx, counter, header, [inner, body])];
    } else {
      parts = [encodeHeader(this.names, this.o.self, false, 0, 0), inner, body];
    }
    let bytes = 0;
    for (const p of parts) bytes += p.length;
    const streamPort = ep.streamPort ?? this.o.streamPort;
    if (streamPort === undefined || !this.stream!.send(ep.ip, streamPort, parts, bytes)) sock.send(parts, ep.port ?? this.o.port, ep.ip);
    const t = this.traffic(hop);
    t.txDatagrams++;
    t.txBytes += bytes;
    return true;
  }

  /** A datagram from another router, over UDP or a stream, from underlay address `from`. */
  private fromUnderlay(d: Buffer, from: string): void {
    const h = decodeHeader(this.names, d);
    if (!h || h.sender === this.o.self) return this.drop('malformed', undefined, `from ${from}`);
    let payload: Buffer;
    if (h.sealed) {
      const k = this.rxKey(h.sender, h.keyId);
      if (!k) return this.drop('unknown-key', h.sender, `from ${from}`);
      if (!k.window.check(h.counter)) return this.drop('replay', h.sender, `counter ${h.counter}`);
      const pt = openSealed(k.key, h.counter, d.subarray(0, HEADER_BYTES), d.subarray(HEADER_BYTES));
      if (!pt) return this.drop('auth', h.sender, `from ${from}`);
      k.window.accept(h.counter);
      payload = pt;
    } else {
      if (this.o.encrypted && !this.trusted(from)) return this.drop('plain-refused', h.sender, `from ${from}`);
      payload = d.subarray(HEADER_BYTES);
    }
    const t = this.traffic(h.sender);
    t.rxDatagrams++;
    t.rxBytes += d.length;
    const i = decodeInner(this.names, payload);
    if (!i) return this.drop('malformed', h.sender);
    const body = payload.subarray(INNER_BYTES);
    if (i.destination !== this.o.self) return this.relay(h.sender, i, payload, body);
    if (i.kind === Kind.Frame) {
      const local = this.locals.get(i.origin);
      if (!local) return this.drop('unknown-origin', i.origin);
      local.send(body, this.o.vxlanPort, '127.0.0.1');
      this.counters.delivered.datagrams++;
      this.counters.delivered.bytes += body.length;
    } else if (i.kind === Kind.ProbeRequest) {
      this.route({ kind: Kind.ProbeReply, hops: MAX_HOPS, origin: this.o.self, destination: i.origin }, body);
    } else if (body.length >= 4) {
      this.probes.get(body.readUInt32BE(0))?.();
    }
  }

  private relay(from: string, i: Inner, payload: Buffer, body: Buffer): void {
    if (i.hops <= 1) return this.drop('hops', i.destination);
    const hop = this.c.routes.nextHop(i.destination);
    if (hop === undefined) return this.drop('no-route', i.destination);
    if (hop === from) return this.drop('loop', i.destination);
    const inner = Buffer.from(payload.subarray(0, INNER_BYTES));
    inner[1] = i.hops - 1;
    if (this.transmit(hop, inner, body)) {
      this.counters.relayed.datagrams++;
      this.counters.relayed.bytes += body.length;
    }
  }

  private rxKey(sender: string, id: number): RxKey | undefined {
    const keys = this.c.keys.dataKeys(sender);
    let st = this.rx.get(sender);
    if (!keys) {
      if (st) this.rx.delete(sender);
      return undefined;
    }
    if (!st || st.current !== keys) {
      const fresh: RxKey = { id: keys.rxId, key: keys.rx, window: new ReplayWindow() };
      const prev = st?.keys[0];
      if (prev) prev.until = Date.now() + (this.o.keyGraceMs ?? 5000);
      st = { current: keys, keys: prev ? [fresh, prev] : [fresh] };
      this.rx.set(sender, st);
    }
    if (st.keys[0]!.id === id) return st.keys[0];
    const prev = st.keys[1];
    return prev && prev.id === id && prev.until! > Date.now() ? prev : undefined;
  }

  private traffic(peer: string): PeerTraffic {
    let t = this.counters.peers.get(peer);
    if (!t) {
      t = { txDatagrams: 0, txBytes: 0, rxDatagrams: 0, rxBytes: 0 };
      this.counters.peers.set(peer, t);
    }
    return t;
  }

  private trusted(ip: string): boolean {
    let v = this.trustCache.get(ip);
    if (v === undefined) {
      const n = parseIPv4(ip);
      v = n !== undefined && this.o.trusted.some((c) => contains(c, n));
      if (this.trustCache.size < 4096) this.trustCache.set(ip, v);
    }
    return v;
  }

  /** Counts a drop; logs at most one line per reason every 10 s (this runs per datagram). */
  private drop(reason: DropReason, peer?: string, detail?: string): void {
    const n = ++this.counters.dropped[reason];
    const now = Date.now();
    if (now - (this.lastLog.get(reason) ?? 0) < LOG_EVERY_MS) return;
    this.lastLog.set(reason, now);
    this.c.log.warn({ reason, peer, detail, total: n }, 'sleeve datagram dropped');
  }
}

/** Binds `s`; on failure closes it and rejects with an error naming the address. */
function bind(s: Socket, port: number, address: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error) => {
      s.close();
      reject(new SysError(`cannot bind UDP ${address}:${port}: ${e.message}`));
    };
    s.once('error', onError);
    s.bind(port, address, () => {
      s.off('error', onError);
      resolve();
    });
  });
}
