/**
 * One mesh connection: framing, the crypto handshake (secure-channel.ts) then the hello, both
 * within one deadline, heartbeats' bookkeeping, and closing with a reason the far end can log.
 *
 * Why it is this way: until its handshake completes a connection is only "pending", and a
 * pending connection lives at most `handshakeMs`, so silent or slow connections cannot hold
 * the router's connection slots. What a valid hello means (self, name clash, duplicate, limit)
 * is the mesh's decision: the connection only reports it and does as told.
 */
import type { Duplex } from 'node:stream';
import type { Logger } from '../common/log';
import { HandshakeError } from '../common/errors';
import { encodeFrame, FrameError, FrameReader } from './frame';
import { SecureChannel } from './secure-channel';
import { byeSchema, COMPRESSED_FRAMES, helloSchema, parseMessage, PROTOCOL, PROTOCOL_MAX, PROTOCOL_MIN, type Hello, type Message } from './protocol';

/** This router's identity, as its hello carries it. */
export interface SelfIdentity {
  name: string;
  nickname: string;
  uid: string;
}

/** What the mesh does with a connection's events. */
export interface ConnectionHandler {
  /** A valid hello arrived; the mesh calls `establish()` or `close()`. */
  hello(c: Connection, h: Hello): void;
  /** A message after the handshake. */
  message(c: Connection, m: Message): void;
  /** The connection closed (once). `refused` is set when the peer refused it before its hello. */
  closed(c: Connection, reason: string, info: { wasEstablished: boolean; refused: boolean }): void;
}

export interface ConnectionOptions {
  outbound: boolean;
  /** ip:port of the far end. */
  remote: string;
  /** The target address this connection was dialled for. */
  target?: string;
  handshakeMs: number;
  self: SelfIdentity;
  log: Logger;
  /** Counts frames and bytes for metrics: kind is 'gossip:CHANNEL', a message type, or 'bytes'. */
  traffic?: (dir: 'in' | 'out', kind: string, bytes: number) => void;
  /** Pre-shared key from the password: frames are sealed, and only peers with the same one get in. */
  psk?: Buffer;
}

let nextId = 1;

/** The metric kind of a frame (gossip:CHANNEL, with :answer for answers to digests; msg, hb, ...). */
export function kindOf(msg: unknown): string {
  const m = msg as { t?: string; ch?: string; a?: boolean };
  return m.t === 'gossip' ? `gossip:${m.ch}${m.a ? ':answer' : ''}` : (m.t ?? 'unknown');
}

export class Connection {
  readonly id = nextId++;
  readonly outbound: boolean;
  readonly remote: string;
  readonly target: string | undefined;
  readonly openedAt = Date.now();
  hello: Hello | undefined;
  established = false;
  /** When the handshake completed. */
  establishedAt = 0;
  /** The peer's full state has arrived (it sent `sync` after it). */
  synced = false;
  lastRecv = Date.now();
  closed = false;
  private readonly reader = new FrameReader();
  /** The handshake, then every frame's protection. */
  readonly channel: SecureChannel;
  private helloSent = false;
  private handshakeTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly socket: Duplex,
    private readonly o: ConnectionOptions,
    private readonly h: ConnectionHandler,
  ) {
    this.outbound = o.outbound;
    this.remote = o.remote;
    this.target = o.target;
    this.channel = new SecureChannel({ name: o.self.name, initiator: o.outbound, psk: o.psk });
    socket.on('data', (d: Buffer) => this.receive(d));
    socket.on('error', (e) => this.close(e.message, false));
    socket.on('close', () => this.close('closed by peer', false));
  }

  /**
   * Arms the handshake deadline and sends the crypto handshake's first frame; once the session
   * exists the dialler sends its hello. The accepting side says who it is in the mesh only once
   * the dialler's hello is valid, so an idle or refused connection learns nothing.
   */
  start(): void {
    this.handshakeTimer = setTimeout(() => this.close(`no handshake within ${this.o.handshakeMs} ms`, true), this.o.handshakeMs);
    this.handshakeTimer.unref();
    if (!this.socket.destroyed) this.socket.write(this.channel.begin());
  }

  /** Frames are sealed on this connection (both routers hold the same secret). */
  get encrypted(): boolean {
    return this.channel.encrypted;
  }

  /** Sends this side's hello (once). */
  sendHello(): void {
    if (this.helloSent) return;
    this.helloSent = true;
    const s = this.o.self;
    this.write({ t: 'hello', proto: PROTOCOL, min: PROTOCOL_MIN, max: PROTOCOL_MAX, name: s.name, nickname: s.nickname, uid: s.uid });
  }

  /** The mesh accepted the peer's hello. */
  establish(): void {
    clearTimeout(this.handshakeTimer);
    this.sendHello();
    this.established = true;
    this.establishedAt = Date.now();
  }

  /** This side's address on the connection. */
  get localAddress(): string | undefined {
    return (this.socket as Duplex & { localAddress?: string }).localAddress;
  }

  get pending(): boolean {
    return !this.established && !this.closed;
  }

  /** Whether the peer speaks protocol `version` or later (known from its hello; 1 before it). */
  speaks(version: number): boolean {
    return (this.hello?.max ?? 1) >= version;
  }

  write(msg: unknown): void {
    if (this.closed || this.socket.destroyed) return;
    this.writeEncoded(encodeFrame(msg, this.speaks(COMPRESSED_FRAMES)), kindOf(msg));
  }

  /** Writes a frame encoded once for many connections. */
  writeEncoded(frame: Buffer, kind: string): void {
    if (this.closed || this.socket.destroyed) return;
    const out = this.channel.wrap(frame);
    this.o.traffic?.('out', kind, out.length);
    this.socket.write(out);
  }

  private receive(chunk: Buffer): void {
    this.lastRecv = Date.now();
    this.o.traffic?.('in', 'bytes', chunk.length);
    try {
      for (const body of this.reader.pushRaw(chunk)) {
        if (this.closed) return;
        const step = this.channel.receive(body);
        if (step.send && !this.socket.destroyed) this.socket.write(step.send);
        if (step.opened && this.outbound) this.sendHello();
        const raw = step.message;
        if (!raw) continue;
        this.o.traffic?.('in', kindOf(raw), 0);
        if (!this.hello) {
          this.beforeHello(raw);
          continue;
        }
        const m = parseMessage(raw);
        if (!m) throw new FrameError(`malformed ${String(raw.t)} message`);
        if (m.t === 'hello') throw new FrameError('second hello');
        if (m.t === 'sync') this.synced = true;
        this.h.message(this, m);
      }
    } catch (e) {
      const why = e instanceof FrameError ? `protocol error: ${e.message}` : e instanceof HandshakeError ? e.message : `error handling a message: ${(e as Error).message}`;
      this.o.log.warn({ remote: this.remote, peer: this.hello?.name, err: why }, e instanceof HandshakeError ? 'peer refused' : 'dropping connection');
      this.close(why, true);
    }
  }

  private beforeHello(raw: Record<string, unknown>): void {
    const bye = byeSchema.safeParse(raw);
    if (bye.success) {
      // refused before the handshake (connection limit, name clash): keep the reason
      this.close(`refused by ${this.remote}: ${bye.data.reason}`, false, true);
      return;
    }
    const p = helloSchema.safeParse(raw);
    if (!p.success || p.data.proto !== PROTOCOL) throw new FrameError('not a weft peer (bad hello)');
    const h = p.data;
    if (h.max < PROTOCOL_MIN || h.min > PROTOCOL_MAX) {
      this.close(`protocol versions ${h.min}..${h.max} do not overlap ours ${PROTOCOL_MIN}..${PROTOCOL_MAX}`, true);
      return;
    }
    this.hello = h;
    this.h.hello(this, h);
  }

  /**
   * Closes once: tells the far end why when it was told who we are or `bye` is set, then ends
   * the socket (destroyed shortly after, whatever the far end does).
   */
  close(reason: string, bye: boolean, refused = false): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.handshakeTimer);
    const wasEstablished = this.established;
    this.established = false;
    if (!this.socket.destroyed) {
      try {
        if (this.hello || bye) this.socket.write(this.channel.wrap(encodeFrame({ t: 'bye', reason: reason.slice(0, 500) })));
      } catch {
        /* closing anyway */
      }
      this.socket.end();
      setTimeout(() => this.socket.destroy(), 200).unref();
    }
    this.h.closed(this, reason, { wasEstablished, refused });
  }
}
