/**
 * Data-path probes: a UDP datagram as large as the pod MTU allows, from this host's bridge
 * address to a peer's, echoed back. One socket on the bridge address (port 6785, the pod network
 * only) answers peers' probes and receives the echoes of ours, so probing costs no process.
 */
import { createSocket, type Socket } from 'node:dgram';
import type { Logger } from '../common/log';

export const PROBE_PORT = 6785;
const MAGIC = 'WEFTPRB1';
const REQUEST = 0x51;
const REPLY = 0x52;

export class Prober {
  private sock: Socket | undefined;
  private readonly pending = new Map<number, () => void>();
  private nextId = 1;

  constructor(private readonly c: { log: Logger }) {}

  /** Listens on this host's bridge address; again with another address moves the socket. */
  async listen(bridgeIp: string): Promise<void> {
    await this.stop();
    const sock = createSocket('udp4');
    sock.on('message', (msg, rinfo) => {
      if (msg.length < 13 || msg.subarray(0, 8).toString() !== MAGIC) return;
      if (msg[8] === REQUEST) {
        msg[8] = REPLY; // echo the request back, full size
        sock.send(msg, rinfo.port, rinfo.address);
      } else if (msg[8] === REPLY) {
        this.pending.get(msg.readUInt32BE(9))?.();
      }
    });
    sock.on('error', (e) => this.c.log.warn({ err: e.message }, 'probe socket error'));
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(PROBE_PORT, bridgeIp, () => resolve());
    });
    sock.unref();
    this.sock = sock;
  }

  get listening(): boolean {
    return this.sock !== undefined;
  }

  async stop(): Promise<void> {
    const s = this.sock;
    this.sock = undefined;
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }

  /** Probes `peerBridgeIp` with datagrams filling `mtu`: two tries, `timeoutMs` each. */
  async probe(peerBridgeIp: string, mtu: number, timeoutMs = 1000): Promise<boolean> {
    const sock = this.sock;
    if (!sock) return false;
    for (let attempt = 0; attempt < 2; attempt++) {
      const id = this.nextId++ >>> 0;
      const buf = Buffer.alloc(Math.max(13, mtu - 28)); // less the IPv4 and UDP headers
      buf.write(MAGIC, 0);
      buf[8] = REQUEST;
      buf.writeUInt32BE(id, 9);
      const ok = await new Promise<boolean>((resolve) => {
        const done = (v: boolean) => {
          clearTimeout(t);
          this.pending.delete(id);
          resolve(v);
        };
        const t = setTimeout(() => done(false), timeoutMs);
        this.pending.set(id, () => done(true));
        sock.send(buf, PROBE_PORT, peerBridgeIp, (err) => err && done(false));
      });
      if (ok) return true;
    }
    return false;
  }
}
