/**
 * One test "host" of the sleeve: runs inside a host network namespace (started with nsenter by
 * sleeve-fixture.ts, since a UDP socket lives in the namespace of its process) and drives a
 * SleeveOverlay from JSON lines on stdin, one answer line per request on stdout.
 *
 * Requests: {id, op, ...}; ops: start, restart (new options, same peers), program, routes,
 * keys, probe, counters, verify, repair, status, stop, teardown, bare. The routes and keys stand in for the mesh: the test sets them.
 *
 * `bare` (the bench's reference): closes the overlay's sockets, keeps its kernel half, and
 * relays in its place with the minimal relay of issue 8's experiment (a socket per peer on the
 * slot's port, one on the sleeve port, a counter before the datagram, AES-256-GCM or nothing):
 * what the design costs without weft's relay code; with `tcp`, the same relay with a TCP
 * connection per peer (a length before each datagram) as its carrier. `restart` returns to the overlay.
 */
import { createInterface } from 'node:readline';
import { createSocket, type Socket } from 'node:dgram';
import { createServer, connect, type Server, type Socket as NetSocket } from 'node:net';
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { SleeveOverlay, type SleeveOptions } from '../../src/datapath/sleeve/sleeve';
import { DataKeys } from '../../src/crypto/aead';
import { Iptables, detectBackend } from '../../src/sys/iptables';
import { createLogger } from '../../src/common/log';
import type { OverlayPeer } from '../../src/datapath/overlay';

const log = createLogger({ name: 'sleeve-host', level: (process.env.SLEEVE_LOG as 'warn') ?? 'warn' });
let overlay: SleeveOverlay | undefined;
let iptables: Iptables | undefined;
let lastPeers: OverlayPeer[] = [];
const routes = new Map<string, string>();
const endpoints = new Map<string, string>();
const keys = new Map<string, DataKeys>();

type Req = { id: number; op: string; [k: string]: unknown };

function setKeys(k: Record<string, { tx: string; rx: string }>): void {
  keys.clear();
  for (const [peer, { tx, rx }] of Object.entries(k)) keys.set(peer, new DataKeys(Buffer.from(tx, 'hex'), Buffer.from(rx, 'hex')));
}

async function handle(r: Req): Promise<unknown> {
  switch (r.op) {
    case 'start': {
      for (const [p, ip] of Object.entries(r.endpoints as Record<string, string>)) endpoints.set(p, ip);
      for (const [p, h] of Object.entries(r.routes as Record<string, string>)) routes.set(p, h);
      setKeys((r.keys ?? {}) as Record<string, { tx: string; rx: string }>);
      iptables = new Iptables(await detectBackend());
      return make(r.options as SleeveOptions);
    }
    case 'bare':
      return r.tcp ? bareTcp(r.encrypted as boolean) : bare(r.encrypted as boolean);
    case 'restart': {
      closeBare();
      await overlay!.stop();
      await overlay!.teardown();
      const mtu = await make(r.options as SleeveOptions);
      await overlay!.program(lastPeers);
      return mtu;
    }
    case 'program':
      lastPeers = r.peers as OverlayPeer[];
      await overlay!.program(lastPeers);
      return (r.peers as OverlayPeer[]).map((p) => ({ peer: p.name, ...overlay!.slotOf(p.name) }));
    case 'routes':
      for (const [p, h] of Object.entries(r.routes as Record<string, string | null>)) {
        if (h === null) routes.delete(p);
        else routes.set(p, h);
      }
      return null;
    case 'keys':
      setKeys(r.keys as Record<string, { tx: string; rx: string }>);
      return null;
    case 'probe':
      return overlay!.probe({ name: r.peer as string, ip: endpoints.get(r.peer as string) ?? '', reachable: true });
    case 'counters': {
      const c = overlay!.counters;
      return { ...c, peers: Object.fromEntries(c.peers) };
    }
    case 'verify':
      return (await overlay!.verify()) ?? null;
    case 'repair':
      await overlay!.repair();
      return null;
    case 'status':
      return overlay!.status(r.peer as string) ?? null;
    case 'stop':
      await overlay?.stop();
      return null;
    case 'teardown':
      await overlay?.teardown();
      return null;
    default:
      throw new Error(`unknown op ${r.op}`);
  }
}

let bareSockets: Socket[] = [];
const bind = (s: Socket, port: number, addr: string) => new Promise<void>((r) => s.bind(port, addr, () => r()));
const udp = () => createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });

let bareTcpServer: Server | undefined;
let bareConns: NetSocket[] = [];

function closeBare(): void {
  for (const s of bareSockets) s.close();
  bareSockets = [];
  bareTcpServer?.close();
  bareTcpServer = undefined;
  for (const c of bareConns) c.destroy();
  bareConns = [];
}

/** The minimal relay with a TCP connection per peer as the carrier (an experiment). */
async function bareTcp(encrypted: boolean): Promise<null> {
  closeBare();
  await overlay!.stop();
  const byIp = new Map<string, { local: Socket; rx: Buffer }>();
  const reader = (sock: NetSocket, peer: { local: Socket; rx: Buffer }) => {
    let parts: Buffer[] = [];
    let have = 0;
    sock.on('data', (chunk: Buffer) => {
      parts.push(chunk);
      have += chunk.length;
      for (;;) {
        if (have < 4) return;
        let head = parts[0]!;
        if (head.length < 4) { head = Buffer.concat(parts); parts = [head]; }
        const len = head.readUInt32BE(0);
        if (have < 4 + len) return;
        const all = parts.length === 1 ? head : Buffer.concat(parts, have);
        const d = all.subarray(4, 4 + len);
        const rest = all.subarray(4 + len);
        parts = rest.length ? [rest] : [];
        have = rest.length;
        if (!encrypted) { peer.local.send(d.subarray(12), 6786, '127.0.0.1'); continue; }
        try {
          const c = createDecipheriv('aes-256-gcm', peer.rx, d.subarray(0, 12));
          c.setAuthTag(d.subarray(d.length - 16));
          const pt = c.update(d.subarray(12, d.length - 16));
          c.final();
          peer.local.send(pt, 6786, '127.0.0.1');
        } catch {
          // a frame from a peer still in the other mode, while the hosts switch one by one
        }
      }
    });
  };
  const out = new Map<string, NetSocket>();
  bareTcpServer = createServer((s) => {
    s.setNoDelay(true);
    bareConns.push(s);
    const peer = byIp.get(s.remoteAddress!.replace('::ffff:', ''));
    if (peer) reader(s, peer);
  });
  await new Promise<void>((r) => bareTcpServer!.listen(6783, '0.0.0.0', () => r()));
  for (const p of lastPeers) {
    const ip = endpoints.get(p.name)!;
    const k = keys.get(p.name)!;
    const local = udp();
    let n = 0;
    local.on('message', (m) => {
      const conn = out.get(ip);
      if (!conn) return;
      const iv = Buffer.alloc(16);
      iv.writeUInt32BE(++n, 12);
      const ivp = iv.subarray(4);
      if (!encrypted) { iv.writeUInt32BE(12 + m.length, 0); conn.write(iv); conn.write(m); return; }
      iv.writeUInt32BE(12 + m.length + 16, 0);
      const c = createCipheriv('aes-256-gcm', k.tx, ivp);
      conn.cork();
      conn.write(iv); conn.write(c.update(m)); c.final(); conn.write(c.getAuthTag());
      conn.uncork();
    });
    await bind(local, overlay!.slotOf(p.name)!.port, '127.0.0.1');
    bareSockets.push(local);
    byIp.set(ip, { local, rx: k.rx });
  }
  // connect after every host listens: retry until the peer's server is up, and again when a
  // host switching after this one closes the connection its old server accepted
  const server = bareTcpServer;
  for (const p of lastPeers) {
    const ip = endpoints.get(p.name)!;
    const dial = () => {
      if (bareTcpServer !== server) return;
      const c = connect(6783, ip);
      c.setNoDelay(true);
      c.on('connect', () => { out.set(ip, c); bareConns.push(c); });
      c.on('error', () => undefined);
      c.on('close', () => {
        if (out.get(ip) === c) out.delete(ip);
        setTimeout(dial, 100);
      });
    };
    dial();
  }
  return null;
}

/** The minimal relay (see the file comment), direct paths only. */
async function bare(encrypted: boolean): Promise<null> {
  closeBare();
  await overlay!.stop();
  const wire = udp();
  await bind(wire, 6783, '0.0.0.0');
  bareSockets.push(wire);
  const byIp = new Map<string, { local: Socket; rx: Buffer }>();
  for (const p of lastPeers) {
    const ip = endpoints.get(p.name)!;
    const k = keys.get(p.name)!;
    const local = udp();
    let n = 0;
    local.on('message', (m) => {
      const iv = Buffer.alloc(12);
      iv.writeUInt32BE(++n, 8);
      if (!encrypted) return wire.send([iv, m], 6783, ip);
      const c = createCipheriv('aes-256-gcm', k.tx, iv);
      wire.send([iv, c.update(m), c.final(), c.getAuthTag()], 6783, ip);
    });
    await bind(local, overlay!.slotOf(p.name)!.port, '127.0.0.1');
    bareSockets.push(local);
    byIp.set(ip, { local, rx: k.rx });
  }
  wire.on('message', (d, r) => {
    const peer = byIp.get(r.address);
    if (!peer) return;
    if (!encrypted) return peer.local.send(d.subarray(12), 6786, '127.0.0.1');
    const c = createDecipheriv('aes-256-gcm', peer.rx, d.subarray(0, 12));
    c.setAuthTag(d.subarray(d.length - 16));
    const pt = c.update(d.subarray(12, d.length - 16));
    c.final();
    peer.local.send(pt, 6786, '127.0.0.1');
  });
  return null;
}

async function make(options: SleeveOptions): Promise<{ mtu: number }> {
  overlay = new SleeveOverlay(
    {
      routes: { nextHop: (p) => routes.get(p), endpoint: (p) => (endpoints.has(p) ? { ip: endpoints.get(p)! } : undefined) },
      keys: { dataKeys: (p) => keys.get(p) },
      iptables: iptables!,
      log,
    },
    options,
  );
  await overlay.start();
  return { mtu: overlay.podMtu({ iface: 'eth0', ip: '', mtu: 1500, how: 'test' }) };
}

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  let req: Req;
  try {
    req = JSON.parse(line) as Req;
  } catch {
    return;
  }
  handle(req).then(
    (result) => process.stdout.write(JSON.stringify({ id: req.id, ok: true, result }) + '\n'),
    (e: Error) => process.stdout.write(JSON.stringify({ id: req.id, ok: false, error: e.message }) + '\n'),
  );
});
rl.on('close', () => {
  void (overlay?.stop() ?? Promise.resolve()).finally(() => process.exit(0));
});
