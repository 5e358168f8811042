/**
 * Data-path probes: a UDP datagram as large as the pod MTU allows, from this host's bridge
 * address to a peer's, echoed back. One socket on the bridge address (port 6785, the pod network
 * only) answers peers' probes and receives the echoes of ours, so probing costs no process.
 *
 * `probeVxlan` tests kernel VXLAN to a peer while another overlay carries it (the forwarding
 * table then points elsewhere): the router builds the VXLAN datagram itself (outer UDP to the
 * peer's underlay address, port 6784; inner Ethernet, IPv4 and UDP from this bridge's address
 * to the peer's, at the full pod MTU), so the peer's kernel decapsulates it and its Prober
 * answers. The inner source MAC is a probe-only one, so the peer's bridge learns nothing that
 * would divert real traffic. Its echo comes back the same way, as a VXLAN datagram the peer's
 * router builds to this host's underlay address (found from the requester's bridge address
 * through `peer`), so the probe passes only when VXLAN works in both directions. Were the echo
 * to follow whatever path the peer uses, a path blocked one way would pass one end's probe
 * (its echo taking the sleeve) and fail the other's: the two ends would carry each other on
 * different overlays, and frames on the sleeve from a peer carried on VXLAN are dropped.
 */
import { createSocket, type Socket } from 'node:dgram';
import type { Logger } from '../common/log';
import { parseIPv4 } from '../common/ip';

export const PROBE_PORT = 6785;
const MAGIC = 'WEFTPRB1';
const REQUEST = 0x51;
const REPLY = 0x52;
/** A request sent as a router-built VXLAN datagram: echoed the same way (VNI at 13, port at 16). */
const REQUEST_VXLAN = 0x53;
/** Magic, kind, id, VNI, port. */
const HEADER_BYTES = 18;

/** Where a peer's kernel VXLAN is reached, from its bridge address (the mesh's peers). */
export interface ProbePeer {
  /** Underlay address. */
  ip: string;
  bridgeMac?: string;
}

export class Prober {
  private sock: Socket | undefined;
  private readonly pending = new Map<number, () => void>();
  private nextId = 1;
  private own: string | undefined;
  private raw: Socket | undefined;

  /**
   * `mac`: the inner source MAC of VXLAN probes (not the bridge's); `peer`: the peer whose bridge
   * has an address, for echoing a VXLAN probe as VXLAN (without it, echoes go by the bridge).
   */
  constructor(private readonly c: { log: Logger; mac?: string; peer?: (bridgeIp: string) => ProbePeer | undefined }) {}

  /** Listens on this host's bridge address; again with another address moves the socket. */
  async listen(bridgeIp: string): Promise<void> {
    await this.stop();
    const sock = createSocket('udp4');
    sock.on('message', (msg, rinfo) => {
      if (msg.length < 13 || msg.subarray(0, 8).toString() !== MAGIC) return;
      if (msg[8] === REQUEST_VXLAN && msg.length >= HEADER_BYTES) {
        this.echoVxlan(msg, rinfo.address);
      } else if (msg[8] === REQUEST) {
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
    this.own = bridgeIp;
  }

  get listening(): boolean {
    return this.sock !== undefined;
  }

  async stop(): Promise<void> {
    const s = this.sock;
    this.sock = undefined;
    this.raw?.close();
    this.raw = undefined;
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }

  /** Probes `peerBridgeIp` with datagrams filling `mtu`: two tries, `timeoutMs` each. */
  probe(peerBridgeIp: string, mtu: number, timeoutMs = 1000): Promise<boolean> {
    const sock = this.sock;
    if (!sock) return Promise.resolve(false);
    return this.exchange(mtu, timeoutMs, (buf, cb) => sock.send(buf, PROBE_PORT, peerBridgeIp, cb));
  }

  /**
   * Probes kernel VXLAN to a peer without its forwarding entries (see the file comment): a
   * datagram to `peer.ip`:`port` carrying a frame of `mtu` bytes to the peer's bridge.
   */
  probeVxlan(peer: { ip: string; bridgeMac?: string; gateway?: string }, vni: number, port: number, mtu: number, timeoutMs = 1000): Promise<boolean> {
    const own = this.own;
    if (!this.sock || !own || !this.c.mac || !peer.bridgeMac || !peer.gateway) return Promise.resolve(false);
    const raw = this.rawSocket();
    const head = vxlanHead(vni, peer.bridgeMac, this.c.mac, own, peer.gateway, mtu);
    return this.exchange(mtu, timeoutMs, (buf, cb) => {
      buf[8] = REQUEST_VXLAN;
      buf.writeUIntBE(vni, 13, 3);
      buf.writeUInt16BE(port, 16);
      raw.send([head, buf], port, peer.ip, cb);
    });
  }

  /**
   * Answers a VXLAN probe from `from` (a bridge address) with a VXLAN datagram to its host. A
   * sender not known yet (its address not gossiped here yet, as at start-up) gets a plain echo
   * through the bridge, as a forwarding-table probe does, rather than none: no answer would
   * move a working peer off kernel VXLAN while the mesh forms.
   */
  private echoVxlan(msg: Buffer, from: string): void {
    const p = this.c.peer?.(from);
    msg[8] = REPLY;
    if (!p?.bridgeMac || !this.own || !this.c.mac) {
      this.sock?.send(msg, PROBE_PORT, from);
      return;
    }
    const vni = msg.readUIntBE(13, 3);
    const port = msg.readUInt16BE(16);
    this.rawSocket().send([vxlanHead(vni, p.bridgeMac, this.c.mac, this.own, from, msg.length + 28), msg], port, p.ip);
  }

  private rawSocket(): Socket {
    if (!this.raw) {
      this.raw = createSocket('udp4');
      this.raw.on('error', (e) => this.c.log.debug({ err: e.message }, 'VXLAN probe socket error'));
      this.raw.unref();
    }
    return this.raw;
  }

  private async exchange(mtu: number, timeoutMs: number, send: (buf: Buffer, cb: (err: Error | null) => void) => void): Promise<boolean> {
    for (let attempt = 0; attempt < 2; attempt++) {
      const id = this.nextId++ >>> 0;
      const buf = Buffer.alloc(Math.max(HEADER_BYTES, mtu - 28)); // less the IPv4 and UDP headers
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
        send(buf, (err) => err && done(false));
      });
      if (ok) return true;
    }
    return false;
  }
}

const mac = (m: string) => Buffer.from(m.split(':').map((h) => parseInt(h, 16)));

/** VXLAN header, inner Ethernet, IPv4 (checksummed, DF) and UDP headers for a probe of `mtu` bytes of IP. */
function vxlanHead(vni: number, dstMac: string, srcMac: string, src: string, dst: string, mtu: number): Buffer {
  const b = Buffer.alloc(8 + 14 + 20 + 8);
  b[0] = 0x08; // VNI present
  b.writeUIntBE(vni, 4, 3);
  mac(dstMac).copy(b, 8);
  mac(srcMac).copy(b, 14);
  b.writeUInt16BE(0x0800, 20);
  const ip = 22;
  const len = Math.max(HEADER_BYTES + 28, mtu);
  b[ip] = 0x45;
  b.writeUInt16BE(len, ip + 2);
  b.writeUInt16BE(0x4000, ip + 6); // don't fragment
  b[ip + 8] = 64;
  b[ip + 9] = 17;
  b.writeUInt32BE(parseIPv4(src)! >>> 0, ip + 12);
  b.writeUInt32BE(parseIPv4(dst)! >>> 0, ip + 16);
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += b.readUInt16BE(ip + i);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  b.writeUInt16BE(~sum & 0xffff, ip + 10);
  const udp = ip + 20;
  b.writeUInt16BE(PROBE_PORT, udp);
  b.writeUInt16BE(PROBE_PORT, udp + 2);
  b.writeUInt16BE(len - 20, udp + 4); // checksum 0: none (IPv4)
  return b;
}
