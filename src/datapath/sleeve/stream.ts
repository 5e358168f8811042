/**
 * The sleeve's TCP carrier: the same datagrams as over UDP (wire.ts), each behind a 4-byte
 * length, on one connection per next hop. Each router sends on the connection it dialled and
 * reads the ones it accepted; what arrives is checked exactly as a UDP datagram is (sealing,
 * keys, replay window), so a connection proves nothing by itself.
 *
 * Why it exists (measured, README "Encryption and multi-hop"): a sleeve datagram is up to 64 KiB
 * and the underlay's MTU is 1500, so over UDP the kernel cuts each into ~45 IP fragments and
 * reassembles them on the far side, and that is most of the relay's CPU. A TCP stream leaves
 * segmentation to GSO/TSO and reassembly to GRO, in large units, so the same relay carries
 * about half as much again. The cost: under loss on the underlay the stream delays what
 * follows a lost segment (TCP inside TCP); `--sleeve-carrier udp` keeps datagrams.
 *
 * Never in the way: while a hop's connection is not up (dialling, refused, blocked) or is
 * stalled, `send` says no and the relay sends the datagram over UDP; a stalled connection is
 * closed and dialled again after a pause. Stalled: a datagram sent `stallMs` ago is still not
 * acknowledged. The reader acknowledges with the count of datagrams it has read (4 bytes back on
 * the same connection, at most every `ACK_EVERY_MS`), because the kernel takes what is written
 * into its send buffer at once: data stuck behind a cut path, waiting for TCP's retransmission
 * timer (seconds, growing to minutes), shows nowhere else.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../../common/log';
import { SysError } from '../../common/errors';
import { HEADER_BYTES, MAX_UDP_PAYLOAD, VERSION } from './wire';

export interface StreamCarrierOptions {
  /** TCP port this router accepts connections on, and dials on its peers unless `send` names another. */
  port: number;
  /** Address to listen on and dial from (default all / the kernel's choice). */
  bindAddress?: string;
  /** A datagram read from a connection, with the address it came from. */
  onFrame(d: Buffer, from: string): void;
  log: Logger;
  /** A connection with a datagram unacknowledged for this long is closed (default 1000 ms). */
  stallMs?: number;
  /** Pause before dialling a hop again after a failure (default 1000 ms). */
  redialMs?: number;
  /** Bytes queued on a connection beyond which `send` says no (default 4 MiB). */
  maxQueued?: number;
}

/** Datagrams sent and received on connections; connections closed as stalled or for bytes that are not sleeve datagrams. */
export interface StreamCounters {
  txFrames: number;
  rxFrames: number;
  stalled: number;
  malformed: number;
}

interface Outbound {
  sock: Socket;
  up: boolean;
  /** Datagrams sent on it, and the reader's last count of them (both modulo 2^32). */
  sent: number;
  acked: number;
  /** Since when a datagram has waited for its acknowledgement; undefined when none waits. */
  waitingSince?: number;
}

const MAX_INBOUND = 1024;
/** The reader acknowledges at most this often (and at once after a quiet spell). */
export const ACK_EVERY_MS = 50;
const DIAL_TIMEOUT_MS = 3000;

export class StreamCarrier {
  private server: Server | undefined;
  private readonly out = new Map<string, Outbound>();
  private readonly notBefore = new Map<string, number>();
  private readonly inbound = new Set<Socket>();
  readonly counters: StreamCounters = { txFrames: 0, rxFrames: 0, stalled: 0, malformed: 0 };

  constructor(private readonly o: StreamCarrierOptions) {}

  get listening(): boolean {
    return this.server?.listening ?? false;
  }

  async start(): Promise<void> {
    if (this.server) return;
    const srv = createServer((s) => this.accept(s));
    srv.maxConnections = MAX_INBOUND;
    await new Promise<void>((resolve, reject) => {
      srv.once('error', (e) => reject(new SysError(`cannot listen on TCP ${this.o.bindAddress ?? '0.0.0.0'}:${this.o.port}: ${e.message}`)));
      srv.listen(this.o.port, this.o.bindAddress ?? '0.0.0.0', () => resolve());
    });
    srv.on('error', (e) => this.o.log.warn({ err: e.message }, 'sleeve stream listener error'));
    this.server = srv;
  }

  async stop(): Promise<void> {
    const srv = this.server;
    this.server = undefined;
    for (const o of this.out.values()) o.sock.destroy();
    this.out.clear();
    for (const s of this.inbound) s.destroy();
    this.inbound.clear();
    if (srv) await new Promise<void>((r) => srv.close(() => r()));
  }

  /** Whether the connection to ip (port: the carrier's unless given) is up. */
  connected(ip: string, port = this.o.port): boolean {
    return this.out.get(`${ip}:${port}`)?.up ?? false;
  }

  /**
   * Queues one datagram (its parts, `bytes` long in all) on the connection to ip:port; false
   * when there is none usable yet (one is dialled) or it is stalled: the caller sends it over UDP.
   */
  send(ip: string, port: number, parts: readonly Buffer[], bytes: number): boolean {
    if (!this.server) return false;
    const key = `${ip}:${port}`;
    const o = this.out.get(key);
    if (!o) {
      this.dial(key, ip, port);
      return false;
    }
    if (!o.up) return false;
    const now = Date.now();
    if (o.waitingSince !== undefined && now - o.waitingSince > (this.o.stallMs ?? 1000)) {
      this.counters.stalled++;
      this.o.log.warn({ peer: key, unacknowledged: (o.sent - o.acked) >>> 0, queued: o.sock.writableLength }, 'sleeve stream stalled; closed, datagrams go over UDP until it is dialled again');
      this.close(key, o);
      return false;
    }
    if (o.sock.writableLength > (this.o.maxQueued ?? 4 << 20)) return false;
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32BE(bytes, 0);
    o.sock.cork();
    o.sock.write(len);
    for (const p of parts) o.sock.write(p);
    o.sock.uncork();
    o.sent = (o.sent + 1) >>> 0;
    o.waitingSince ??= now;
    this.counters.txFrames++;
    return true;
  }

  private dial(key: string, ip: string, port: number): void {
    if ((this.notBefore.get(key) ?? 0) > Date.now()) return;
    const sock = connect({ host: ip, port, localAddress: this.o.bindAddress && this.o.bindAddress !== '0.0.0.0' ? this.o.bindAddress : undefined });
    const o: Outbound = { sock, up: false, sent: 0, acked: 0 };
    this.out.set(key, o);
    sock.setTimeout(DIAL_TIMEOUT_MS, () => {
      if (!o.up) this.close(key, o);
    });
    sock.on('connect', () => {
      o.up = true;
      sock.setTimeout(0);
      sock.setNoDelay(true);
    });
    let partial: Buffer = Buffer.alloc(0);
    sock.on('data', (chunk: Buffer) => {
      const b = partial.length ? Buffer.concat([partial, chunk]) : chunk;
      const whole = b.length - (b.length % 4);
      if (whole === 0) return void (partial = b);
      partial = Buffer.from(b.subarray(whole));
      o.acked = b.readUInt32BE(whole - 4);
      // what is still unacknowledged was sent after the datagrams just acknowledged
      o.waitingSince = o.acked === o.sent ? undefined : Date.now();
    });
    sock.on('error', () => undefined); // 'close' follows
    sock.on('close', () => {
      if (this.out.get(key) === o) this.close(key, o);
    });
  }

  private close(key: string, o: Outbound): void {
    o.sock.destroy();
    if (this.out.get(key) === o) this.out.delete(key);
    this.notBefore.set(key, Date.now() + (this.o.redialMs ?? 1000));
  }

  private accept(s: Socket): void {
    if (!this.server) return void s.destroy();
    const from = (s.remoteAddress ?? '').replace(/^::ffff:/, '');
    this.inbound.add(s);
    s.setNoDelay(true);
    s.on('error', () => undefined);
    const reader = new FrameReader();
    let read = 0;
    let told = 0;
    let ackedAt = 0;
    let ackTimer: NodeJS.Timeout | undefined;
    const ack = () => {
      ackTimer = undefined;
      ackedAt = Date.now();
      told = read;
      const b = Buffer.allocUnsafe(4);
      b.writeUInt32BE(read, 0);
      if (!s.destroyed) s.write(b);
    };
    s.on('close', () => {
      this.inbound.delete(s);
      clearTimeout(ackTimer);
    });
    s.on('data', (chunk: Buffer) => {
      reader.push(chunk);
      for (;;) {
        const d = reader.next();
        if (d === undefined) break;
        if (d === null) {
          this.counters.malformed++;
          this.o.log.warn({ from }, 'sleeve stream: not a sleeve datagram; connection closed');
          return void s.destroy();
        }
        read = (read + 1) >>> 0;
        this.counters.rxFrames++;
        this.o.onFrame(d, from);
      }
      if (ackTimer || read === told) return;
      const wait = ackedAt + ACK_EVERY_MS - Date.now();
      if (wait <= 0) ack();
      else ackTimer = setTimeout(ack, wait);
    });
  }
}

/** Cuts a byte stream into length-prefixed datagrams. */
export class FrameReader {
  private chunks: Buffer[] = [];
  private have = 0;
  private need = -1;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.have += chunk.length;
  }

  /** The next whole datagram; undefined when more bytes are needed; null when the stream is not ours (bad length or version). */
  next(): Buffer | undefined | null {
    if (this.need < 0) {
      if (this.have < 5) return undefined;
      const h = this.take(4);
      this.need = h.readUInt32BE(0);
      if (this.need < HEADER_BYTES || this.need > MAX_UDP_PAYLOAD || this.chunks[0]![0] !== VERSION) return null;
    }
    if (this.have < this.need) return undefined;
    const d = this.take(this.need);
    this.need = -1;
    return d;
  }

  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    this.have -= n;
    if (first.length > n) {
      this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    if (first.length === n) {
      this.chunks.shift();
      return first;
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    return out;
  }
}
