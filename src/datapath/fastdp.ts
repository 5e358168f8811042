/**
 * The fast data path: a kernel VXLAN device on UDP 6784, a port of the bridge, with one
 * forwarding entry per peer for flooding (head-end replication) and one per known remote MAC.
 *
 * Why it is this way: the kernel encapsulates and forwards, so a router restart drops no
 * established traffic: the device and its entries outlive the router, and a starting router
 * only adds what is missing. Entries of a peer are removed when the peer is gone for good
 * (unreachable longer than the grace period, or removed), not on every dropped connection.
 * Remote pod MACs are learnt by the device itself from incoming traffic (learning is on).
 */
import { createSocket, type Socket } from 'node:dgram';
import { run } from '../sys/exec';
import { getLink } from '../sys/link';
import type { Logger } from '../common/log';

export const VXLAN_PORT = 6784;
export const VXLAN_VNI = 6784;
export const VXLAN_DEV = 'vxlan-6784';
const ZERO_MAC = '00:00:00:00:00:00';

/** What the data path needs to know about a peer. */
export interface PeerEndpoint {
  name: string;
  /** Underlay address its VXLAN device listens on. */
  ip: string;
  /** Its bridge's MAC, when published. */
  bridgeMac?: string;
}

interface FdbEntry {
  mac: string;
  dst?: string;
  flags?: string[];
  state?: string;
}

export interface FastDpOptions {
  bridge: string;
  mtu: number;
  /** This host's underlay address (VXLAN source). */
  localIp: string;
  /** Underlay interface, when known. */
  underlay?: string;
  log: Logger;
}

/** UDP port of the data-path probes, on the bridge addresses (pod network only). */
export const PROBE_PORT = 6785;
const PROBE_MAGIC = 'WEFTPRB1';

export class FastDp {
  private sock: Socket | undefined;
  private readonly pending = new Map<number, () => void>();
  private nextProbe = 1;

  constructor(readonly o: FastDpOptions) {}

  /** Creates or adopts the VXLAN device and attaches it to the bridge. */
  async setup(): Promise<void> {
    const link = await getLink(VXLAN_DEV);
    const info = link?.linkinfo as { info_kind?: string; info_data?: { id?: number; port?: number; local?: string } } | undefined;
    const fits = info?.info_kind === 'vxlan' && info.info_data?.id === VXLAN_VNI && info.info_data?.port === VXLAN_PORT && info.info_data?.local === this.o.localIp;
    if (link && !fits) {
      this.o.log.warn({ dev: VXLAN_DEV }, 'VXLAN device has other settings; recreating it');
      await run('ip', ['link', 'del', VXLAN_DEV]);
    }
    if (!link || !fits) {
      const args = ['link', 'add', VXLAN_DEV, 'type', 'vxlan', 'id', String(VXLAN_VNI), 'dstport', String(VXLAN_PORT), 'local', this.o.localIp];
      if (this.o.underlay) args.push('dev', this.o.underlay);
      await run('ip', args);
      this.o.log.info({ dev: VXLAN_DEV, local: this.o.localIp }, 'VXLAN device created');
    }
    await run('ip', ['link', 'set', VXLAN_DEV, 'mtu', String(this.o.mtu), 'master', this.o.bridge, 'up']);
  }

  /** Undefined when the device is up and on the bridge; else what is wrong. */
  async verify(): Promise<string | undefined> {
    const l = await getLink(VXLAN_DEV);
    if (!l) return `VXLAN device ${VXLAN_DEV} is missing`;
    if (!l.flags.includes('UP')) return `VXLAN device ${VXLAN_DEV} is down`;
    if (l.master !== this.o.bridge) return `VXLAN device ${VXLAN_DEV} is not on bridge ${this.o.bridge}`;
    return undefined;
  }

  private async entries(): Promise<FdbEntry[]> {
    const { stdout } = await run('bridge', ['-json', 'fdb', 'show', 'dev', VXLAN_DEV]);
    return stdout.trim() ? (JSON.parse(stdout) as FdbEntry[]) : [];
  }

  /**
   * Makes the forwarding entries match `peers`: adds what is missing; removes entries of
   * underlay addresses in `gone` (and no others, so a restart keeps the rest).
   */
  async program(peers: readonly PeerEndpoint[], gone: readonly string[] = []): Promise<{ added: number; removed: number }> {
    const have = (await this.entries()).filter((e) => e.dst);
    const has = (mac: string, dst: string) => have.some((e) => e.mac === mac && e.dst === dst);
    const lines: string[] = [];
    for (const p of peers) {
      if (!has(ZERO_MAC, p.ip)) lines.push(`fdb append ${ZERO_MAC} dev ${VXLAN_DEV} dst ${p.ip} self permanent`);
      if (p.bridgeMac && !has(p.bridgeMac, p.ip)) lines.push(`fdb replace ${p.bridgeMac} dev ${VXLAN_DEV} dst ${p.ip} self permanent`);
    }
    const wanted = new Set(peers.map((p) => p.ip));
    let removed = 0;
    for (const e of have) {
      if (e.dst && gone.includes(e.dst) && !wanted.has(e.dst)) {
        lines.push(`fdb del ${e.mac} dev ${VXLAN_DEV} dst ${e.dst} self`);
        removed++;
      }
    }
    if (lines.length) await run('bridge', ['-batch', '-'], { input: lines.join('\n') + '\n' });
    if (lines.length) this.o.log.debug({ added: lines.length - removed, removed }, 'VXLAN forwarding entries programmed');
    return { added: lines.length - removed, removed };
  }

  /**
   * Answers data-path probes on this host's bridge address (UDP 6785). One socket serves both
   * directions, so probing costs no process per peer.
   */
  async startResponder(bridgeIp: string): Promise<void> {
    await this.stopResponder();
    const sock = createSocket('udp4');
    sock.on('message', (msg, rinfo) => {
      if (msg.length < 13 || msg.subarray(0, 8).toString() !== PROBE_MAGIC) return;
      if (msg[8] === 0x51) {
        msg[8] = 0x52; // Q -> R: echo the request back, full size
        sock.send(msg, rinfo.port, rinfo.address);
      } else if (msg[8] === 0x52) {
        this.pending.get(msg.readUInt32BE(9))?.();
      }
    });
    sock.on('error', (e) => this.o.log.warn({ err: e.message }, 'probe socket error'));
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(PROBE_PORT, bridgeIp, () => resolve());
    });
    sock.unref();
    this.sock = sock;
  }

  async stopResponder(): Promise<void> {
    const s = this.sock;
    this.sock = undefined;
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }

  /**
   * Probes the data path to a peer: a datagram as large as the pod MTU allows, through the
   * bridge and the VXLAN device to the peer's bridge address, echoed back. Two tries, 1 s each.
   */
  async probe(peerBridgeIp: string): Promise<boolean> {
    const sock = this.sock;
    if (!sock) return false;
    for (let attempt = 0; attempt < 2; attempt++) {
      const id = this.nextProbe++ >>> 0;
      const buf = Buffer.alloc(Math.max(13, this.o.mtu - 28));
      buf.write(PROBE_MAGIC, 0);
      buf[8] = 0x51;
      buf.writeUInt32BE(id, 9);
      const ok = await new Promise<boolean>((resolve) => {
        const t = setTimeout(() => {
          this.pending.delete(id);
          resolve(false);
        }, 1000);
        this.pending.set(id, () => {
          clearTimeout(t);
          this.pending.delete(id);
          resolve(true);
        });
        sock.send(buf, PROBE_PORT, peerBridgeIp, (err) => {
          if (err) {
            clearTimeout(t);
            this.pending.delete(id);
            resolve(false);
          }
        });
      });
      if (ok) return true;
    }
    return false;
  }
}
