/**
 * The sleeve's userspace relay on loopback, no root: three relays with keys from real
 * handshakes, a test socket standing in for each host's kernel VXLAN, and a recording proxy
 * on the wire between two of them for replays and alterations.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type Socket, type RemoteInfo } from 'node:dgram';
import { ControlHandshake, deriveDataKeys, derivePsk, type ControlSession } from '../../src/crypto/handshake';
import type { DataKeys } from '../../src/crypto/aead';
import { SleeveRelay } from '../../src/datapath/sleeve/relay';
import { HEADER_BYTES, Kind, MAX_HOPS, NameCodec, encodeHeader, encodeInner } from '../../src/datapath/sleeve/wire';
import { sealParts } from '../../src/crypto/aead';
import { connect, createServer, type Socket as NetSocket } from 'node:net';
import { parseCidr } from '../../src/common/ip';
import { createLogger } from '../../src/common/log';
import { portBase } from '../helpers/ports';

const log = createLogger({ name: 't', level: 'silent' });
const PSK = derivePsk('relay test secret');
const names = ['02:00:00:00:00:01', '02:00:00:00:00:02', '02:00:00:00:00:03'];

function sessions(a: string, b: string, pskA = PSK, pskB = PSK): [ControlSession, ControlSession] {
  const i = new ControlHandshake({ name: a, initiator: true, psk: pskA });
  const r = new ControlHandshake({ name: b, initiator: false, psk: pskB });
  const hi = i.beginHandshake();
  const hr = r.beginHandshake();
  r.onHandshake(hi);
  const c1 = i.onHandshake(hr).send!;
  const rs = r.onHandshake(c1);
  const is = i.onHandshake(rs.send!);
  return [is.session!, rs.session!];
}

async function udp(port = 0): Promise<Socket> {
  // room for a burst of 60000-byte frames (a stream delivers them back to back)
  const s = createSocket({ type: 'udp4', recvBufferSize: 8 << 20 });
  await new Promise<void>((r) => s.bind(port, '127.0.0.1', () => r()));
  return s;
}
const portOf = (s: Socket) => s.address().port;
const close = (s: Socket) => new Promise<void>((r) => s.close(() => r()));

async function until(f: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Frames a fake kernel received: payload and the local port it came from (the origin's socket). */
interface Kernel {
  sock: Socket;
  got: { data: Buffer; from: number }[];
}

interface Net {
  relays: SleeveRelay[];
  kernels: Kernel[];
  /** routes[i][peer] = next hop from relay i. */
  routes: Map<string, string>[];
  /** endpoints[i][peer] = where relay i sends datagrams for peer (its port, or a proxy's). */
  endpoints: Map<string, number>[];
  keys: Map<string, DataKeys>[];
  /** localPort(i, j): relay i's local socket for peer j. */
  localPort: (i: number, j: number) => number;
  stop(): Promise<void>;
}

async function net(opts: { encrypted?: boolean; trusted?: string[]; wrongKeysBetween?: [number, number]; keyGraceMs?: number; stream?: boolean; streamPorts?: Map<string, number>[] } = {}): Promise<Net> {
  const encrypted = opts.encrypted ?? true;
  const kernels: Kernel[] = [];
  for (let i = 0; i < 3; i++) {
    const k: Kernel = { sock: await udp(), got: [] };
    k.sock.on('message', (m, r: RemoteInfo) => k.got.push({ data: m, from: r.port }));
    kernels.push(k);
  }
  const routes = names.map(() => new Map<string, string>());
  const endpoints = names.map(() => new Map<string, number>());
  const keys = names.map(() => new Map<string, DataKeys>());
  for (let i = 0; i < 3; i++) {
    for (let j = i + 1; j < 3; j++) {
      const wrong = opts.wrongKeysBetween && opts.wrongKeysBetween[0] === i && opts.wrongKeysBetween[1] === j;
      const [si, sj] = sessions(names[i]!, names[j]!, PSK, PSK);
      const sj2 = wrong ? sessions(names[i]!, names[j]!, derivePsk('x'), derivePsk('x'))[1] : sj;
      keys[i]!.set(names[j]!, deriveDataKeys(si, 'sleeve')!);
      keys[j]!.set(names[i]!, deriveDataKeys(sj2, 'sleeve')!);
    }
  }
  const base = portBase();
  const localPort = (i: number, j: number) => base + 10 + i * 3 + j;
  const relays: SleeveRelay[] = [];
  for (let i = 0; i < 3; i++) {
    const self = names[i]!;
    const r = new SleeveRelay(
      {
        routes: {
          nextHop: (p) => routes[i]!.get(p),
          endpoint: (p) => (endpoints[i]!.has(p) ? { ip: '127.0.0.1', port: endpoints[i]!.get(p)!, streamPort: opts.streamPorts?.[i]?.get(p) ?? (opts.stream ? base + 5 + names.indexOf(p) : undefined) } : undefined),
        },
        keys: { dataKeys: (p) => (encrypted ? keys[i]!.get(p) : undefined) },
        log,
      },
      { self, port: base + i, bindAddress: '127.0.0.1', encrypted, trusted: (opts.trusted ?? []).map((c) => parseCidr(c)!), vxlanPort: portOf(kernels[i]!.sock), probeBytes: 9000, keyGraceMs: opts.keyGraceMs, streamPort: opts.stream ? base + 5 + i : undefined, streamStallMs: 300 },
    );
    await r.start();
    relays.push(r);
  }
  for (let i = 0; i < 3; i++) {
    for (let j = 0; j < 3; j++) {
      if (i === j) continue;
      routes[i]!.set(names[j]!, names[j]!);
      endpoints[i]!.set(names[j]!, base + j);
      await relays[i]!.attach(names[j]!, localPort(i, j));
    }
  }
  return {
    relays,
    kernels,
    routes,
    endpoints,
    keys,
    localPort,
    async stop() {
      for (const r of relays) await r.stop();
      for (const k of kernels) await close(k.sock);
    },
  };
}

/** The kernel of host i sends a VXLAN datagram towards peer j (to i's local socket for j). */
async function kernelSend(n: Net, i: number, j: number, data: Buffer): Promise<void> {
  await new Promise<void>((r, e) => n.kernels[i]!.sock.send(data, n.localPort(i, j), '127.0.0.1', (err) => (err ? e(err) : r())));
}

const frame = (tag: string, size = 200) => Buffer.concat([Buffer.from(`VXLANHDR${tag}`), Buffer.alloc(size, 0x5a)]);

test('a frame crosses sealed, is handed to the kernel from the origin\'s local socket, and counted', async () => {
  const n = await net();
  try {
    const f = frame('direct', 60000);
    await kernelSend(n, 0, 1, f);
    await until(() => n.kernels[1]!.got.length === 1, 'delivery at host 2');
    assert.deepEqual(n.kernels[1]!.got[0]!.data, f);
    assert.equal(n.kernels[1]!.got[0]!.from, n.localPort(1, 0), 'from host 2\'s socket for host 1 (its SNAT gives the peer\'s address)');
    const tx = n.relays[0]!.counters.peers.get(names[1]!)!;
    const rx = n.relays[1]!.counters.peers.get(names[0]!)!;
    assert.equal(tx.txDatagrams, 1);
    assert.equal(rx.rxDatagrams, 1);
    assert.equal(tx.txBytes, rx.rxBytes);
    assert.ok(tx.txBytes > f.length, 'headers and tag on the wire');
    assert.equal(n.relays[1]!.counters.delivered.datagrams, 1);
  } finally {
    await n.stop();
  }
});

test('relayed hop by hop: 1 -> 2 -> 3, re-sealed per hop, delivered as from 1; direct again when the route says so', async () => {
  const n = await net();
  try {
    n.routes[0]!.set(names[2]!, names[1]!);
    n.routes[2]!.set(names[0]!, names[1]!);
    await kernelSend(n, 0, 2, frame('via'));
    await until(() => n.kernels[2]!.got.length === 1, 'delivery at host 3 through host 2');
    assert.equal(n.kernels[2]!.got[0]!.from, n.localPort(2, 0), 'origin is host 1, not the relay');
    assert.equal(n.kernels[1]!.got.length, 0, 'the relay delivers nothing to its own kernel');
    assert.equal(n.relays[1]!.counters.relayed.datagrams, 1);
    assert.equal(n.relays[0]!.counters.peers.get(names[2]!), undefined, 'nothing sent to host 3 directly');
    // and back, 3 -> 2 -> 1
    await kernelSend(n, 2, 0, frame('back'));
    await until(() => n.kernels[0]!.got.length === 1, 'delivery at host 1 through host 2');
    assert.equal(n.relays[1]!.counters.relayed.datagrams, 2);
    // the direct route returns
    n.routes[0]!.set(names[2]!, names[2]!);
    await kernelSend(n, 0, 2, frame('direct-again'));
    await until(() => n.kernels[2]!.got.length === 2, 'direct delivery');
    assert.equal(n.relays[1]!.counters.relayed.datagrams, 2, 'host 2 relays nothing more');
    assert.equal(n.relays[0]!.counters.peers.get(names[2]!)?.txDatagrams, 1);
  } finally {
    await n.stop();
  }
});

test('a route loop is cut: a relay never sends a datagram back where it came from', async () => {
  const n = await net();
  try {
    n.routes[0]!.set(names[2]!, names[1]!);
    n.routes[1]!.set(names[2]!, names[0]!); // 2 thinks 3 is behind 1
    await kernelSend(n, 0, 2, frame('loop'));
    await until(() => n.relays[1]!.counters.dropped.loop === 1, 'loop drop at host 2');
    assert.equal(n.kernels.reduce((a, k) => a + k.got.length, 0), 0);
  } finally {
    await n.stop();
  }
});

/** Puts a recording proxy between relay 0 and relay 1 (0's datagrams for 1 pass through it). */
async function proxy(n: Net): Promise<{ seen: Buffer[]; hold: boolean; inject(d: Buffer): Promise<void>; close(): Promise<void> }> {
  const p = await udp();
  const seen: Buffer[] = [];
  const target = n.relays[1]!.o.port;
  const px = {
    seen,
    /** Record without forwarding. */
    hold: false,
    inject: (d: Buffer) => new Promise<void>((r, e) => p.send(d, target, '127.0.0.1', (err) => (err ? e(err) : r()))),
    close: () => close(p),
  };
  p.on('message', (m) => {
    seen.push(Buffer.from(m));
    if (!px.hold) p.send(m, target, '127.0.0.1');
  });
  n.endpoints[0]!.set(names[1]!, portOf(p));
  return px;
}

test('a replayed datagram is dropped and counted; an altered one fails authentication; neither is delivered', async () => {
  const n = await net();
  const px = await proxy(n);
  try {
    const secret = Buffer.from('PING-PAYLOAD-PATTERN-0123456789');
    await kernelSend(n, 0, 1, Buffer.concat([Buffer.from('VXLANHDR'), secret]));
    await until(() => n.kernels[1]!.got.length === 1, 'first delivery');
    const wire = px.seen[0]!;
    assert.equal(wire.indexOf(secret), -1, 'the payload is not on the wire in clear');
    assert.equal(wire.indexOf(Buffer.from('VXLANHDR')), -1, 'nor the VXLAN header');
    await px.inject(wire);
    await until(() => n.relays[1]!.counters.dropped.replay === 1, 'replay counted');
    // hold the next datagram back, send altered copies of it first, then the genuine one
    px.hold = true;
    await kernelSend(n, 0, 1, frame('held'));
    await until(() => px.seen.length === 2, 'second datagram captured');
    const held = px.seen[1]!;
    // a ciphertext byte, a tag byte, and the counter (in the authenticated header) moved forward
    for (const [at, bit] of [[HEADER_BYTES + 3, 0x01], [held.length - 1, 0x01], [19, 0x10]] as const) {
      const bad = Buffer.from(held);
      bad[at]! ^= bit;
      await px.inject(bad);
    }
    const d = () => JSON.stringify(n.relays[1]!.counters.dropped);
    await until(() => n.relays[1]!.counters.dropped.auth === 3, 'three decryption failures');
    assert.equal(n.kernels[1]!.got.length, 1, `nothing more was delivered: ${d()}`);
    await px.inject(held);
    await until(() => n.kernels[1]!.got.length === 2, 'the genuine datagram passes after the forgeries (the window did not move)');
    assert.equal(n.relays[1]!.counters.dropped.replay, 1);
    px.hold = false;
    await kernelSend(n, 0, 1, frame('after'));
    await until(() => n.kernels[1]!.got.length === 3, 'delivery after the attacks');
  } finally {
    await px.close();
    await n.stop();
  }
});

test('wrong keys: nothing is delivered, the datagrams are counted as unknown-key', async () => {
  const n = await net({ wrongKeysBetween: [0, 2] });
  try {
    for (let k = 0; k < 3; k++) await kernelSend(n, 0, 2, frame(`w${k}`));
    await until(() => n.relays[2]!.counters.dropped['unknown-key'] === 3, 'three refused');
    assert.equal(n.kernels[2]!.got.length, 0);
    assert.equal(await n.relays[0]!.probe(names[2]!, 300, 1), false, 'the probe fails too');
    assert.equal(await n.relays[0]!.probe(names[1]!, 2000, 1), true, 'while the good pair works');
  } finally {
    await n.stop();
  }
});

test('plain datagrams: refused by an encrypted relay from outside trusted subnets, accepted inside', async () => {
  const plain = await net({ encrypted: false });
  const enc = await net();
  try {
    await kernelSend(plain, 0, 1, frame('plain'));
    await until(() => plain.kernels[1]!.got.length === 1, 'plain delivery');
    // replay a plain relay's datagram into the encrypted relay 1: refused
    const px = await proxy(plain);
    await kernelSend(plain, 0, 1, frame('plain2'));
    await until(() => px.seen.length === 1, 'captured');
    assert.ok(px.seen[0]!.includes(Buffer.from('VXLANHDRplain2')), 'plain on the wire');
    const s = await udp();
    await new Promise<void>((r) => s.send(px.seen[0]!, enc.relays[1]!.o.port, '127.0.0.1', () => r()));
    await until(() => enc.relays[1]!.counters.dropped['plain-refused'] === 1, 'plain refused');
    assert.equal(enc.kernels[1]!.got.length, 0);
    await close(s);
    await px.close();
  } finally {
    await plain.stop();
    await enc.stop();
  }
  const trusted = await net({ trusted: ['127.0.0.0/8'] });
  try {
    const px = await proxy(trusted);
    await kernelSend(trusted, 0, 1, frame('trusted'));
    await until(() => trusted.kernels[1]!.got.length === 1, 'trusted delivery');
    assert.ok(px.seen[0]!.includes(Buffer.from('VXLANHDRtrusted')), 'a trusted hop is not sealed');
    assert.equal(trusted.relays[0]!.sealsTo('127.0.0.1'), false);
    assert.equal(trusted.relays[0]!.sealsTo('192.0.2.1'), true);
    await px.close();
  } finally {
    await trusted.stop();
  }
});

test('probes: full size, direct and relayed; an unreachable peer fails within the deadline', async () => {
  const n = await net();
  try {
    assert.equal(await n.relays[0]!.probe(names[1]!), true);
    n.routes[0]!.set(names[2]!, names[1]!);
    n.routes[2]!.set(names[0]!, names[1]!);
    assert.equal(await n.relays[0]!.probe(names[2]!), true);
    assert.ok(n.relays[1]!.counters.relayed.bytes >= 2 * 9000, 'request and reply relayed at full size');
    n.routes[0]!.delete(names[2]!);
    assert.equal(await n.relays[0]!.probe(names[2]!, 200, 1), false);
    assert.ok(n.relays[0]!.counters.dropped['no-route'] >= 1);
  } finally {
    await n.stop();
  }
});

test('a frame from an origin this host does not carry is dropped, not handed to the kernel unattributed', async () => {
  const n = await net();
  try {
    await n.relays[1]!.detach(names[0]!);
    await kernelSend(n, 0, 1, frame('orphan'));
    await until(() => n.relays[1]!.counters.dropped['unknown-origin'] === 1, 'unknown origin counted');
    assert.equal(n.kernels[1]!.got.length, 0);
  } finally {
    await n.stop();
  }
});

for (const grace of [60_000, 0]) {
  test(`after a reconnection the previous key is accepted ${grace ? 'during the grace period' : 'no longer once the grace is over'}`, async () => {
    const n = await net({ keyGraceMs: grace });
    const px = await proxy(n);
    try {
      await kernelSend(n, 0, 1, frame('old-1'));
      await until(() => n.kernels[1]!.got.length === 1, 'first delivery');
      px.hold = true;
      await kernelSend(n, 0, 1, frame('old-2'));
      await until(() => px.seen.length === 2, 'held');
      // a new session between 1 and 2: both ends switch keys
      const [s0, s1] = sessions(names[0]!, names[1]!);
      n.keys[0]!.set(names[1]!, deriveDataKeys(s0, 'sleeve')!);
      n.keys[1]!.set(names[0]!, deriveDataKeys(s1, 'sleeve')!);
      px.hold = false;
      await kernelSend(n, 0, 1, frame('new-1'));
      await until(() => n.kernels[1]!.got.length === 2, 'delivery under the new keys');
      await px.inject(px.seen[1]!);
      if (grace) {
        await until(() => n.kernels[1]!.got.length === 3, 'the datagram in flight under the old key is delivered');
      } else {
        await until(() => n.relays[1]!.counters.dropped['unknown-key'] === 1, 'the old key is refused');
        assert.equal(n.kernels[1]!.got.length, 2);
      }
    } finally {
      await px.close();
      await n.stop();
    }
  });
}

// ---- the stream carrier (stream.ts): the same datagrams on a TCP connection per hop ----

/** The port relay i's stream carrier listens on (see net()). */
const streamPortOf = (n: Net, i: number) => n.relays[i]!.o.streamPort!;

test('stream carrier: UDP until the connection is up, then the stream; relayed 1 -> 2 -> 3 over streams, delivered as from 1', async () => {
  const n = await net({ stream: true });
  try {
    await kernelSend(n, 0, 1, frame('first', 60000));
    await until(() => n.kernels[1]!.got.length === 1, 'the first frame, over UDP while the stream is dialled');
    assert.equal(n.relays[1]!.counters.stream!.rxFrames, 0, 'not over the stream: it was not up');
    await until(() => n.relays[0]!.streamsTo('127.0.0.1', streamPortOf(n, 1)), 'host 1 connected to host 2');
    const big = frame('big', 60000);
    for (let k = 0; k < 20; k++) await kernelSend(n, 0, 1, big);
    await until(() => n.kernels[1]!.got.length === 21, 'twenty frames over the stream');
    assert.ok(n.kernels[1]!.got.slice(1).every((g) => g.data.equals(big) && g.from === n.localPort(1, 0)), 'each whole, from host 2\'s socket for host 1');
    assert.equal(n.relays[0]!.counters.stream!.txFrames, 20);
    assert.equal(n.relays[1]!.counters.stream!.rxFrames, 20);
    // acknowledged: after twice the stall limit (300 ms here) the stream is still used
    await new Promise((r) => setTimeout(r, 600));
    await kernelSend(n, 0, 1, frame('later', 1000));
    await until(() => n.kernels[1]!.got.length === 22, 'a frame after a quiet spell');
    assert.deepEqual([n.relays[0]!.counters.stream!.txFrames, n.relays[0]!.counters.stream!.stalled], [21, 0], 'on the stream, not closed as stalled');
    // relayed: host 1 reaches host 3 through host 2, each hop on its own stream once up
    n.routes[0]!.set(names[2]!, names[1]!);
    n.routes[1]!.set(names[2]!, names[2]!);
    await kernelSend(n, 0, 2, frame('via', 1000)); // host 2 dials host 3 on this one
    await until(() => n.kernels[2]!.got.length === 1, 'relayed delivery');
    await until(() => n.relays[1]!.streamsTo('127.0.0.1', streamPortOf(n, 2)), 'host 2 connected to host 3');
    const before = n.relays[2]!.counters.stream!.rxFrames;
    await kernelSend(n, 0, 2, frame('via2', 1000));
    await until(() => n.kernels[2]!.got.length === 2, 'second relayed delivery');
    assert.equal(n.relays[2]!.counters.stream!.rxFrames, before + 1, 'the last hop over the stream');
    assert.equal(n.kernels[2]!.got[1]!.from, n.localPort(2, 0), 'delivered as from host 1');
    assert.equal(n.relays[1]!.counters.relayed.datagrams, 2);
  } finally {
    await n.stop();
  }
});

test('stream carrier: a replayed or altered datagram on a connection is dropped; bytes that are not sleeve datagrams close it', async () => {
  const n = await net({ stream: true });
  const codec = new NameCodec();
  const conns: NetSocket[] = [];
  try {
    const k = n.keys[0]!.get(names[1]!)!;
    const sealed = (tag: string) => {
      const counter = k.nextCounter();
      const header = encodeHeader(codec, names[0]!, true, k.txId, counter);
      const inner = encodeInner(codec, { kind: Kind.Frame, hops: MAX_HOPS, origin: names[0]!, destination: names[1]! });
      return Buffer.concat([header, ...sealParts(k.tx, counter, header, [inner, frame(tag)])]);
    };
    const framed = (d: Buffer) => {
      const len = Buffer.alloc(4);
      len.writeUInt32BE(d.length, 0);
      return Buffer.concat([len, d]);
    };
    const c = connect(streamPortOf(n, 1), '127.0.0.1');
    c.on('data', () => undefined); // acknowledgements
    conns.push(c);
    await new Promise<void>((r) => c.once('connect', () => r()));
    const d = sealed('genuine');
    const altered = sealed('altered');
    altered[altered.length - 1]! ^= 1;
    c.write(Buffer.concat([framed(d), framed(d), framed(altered)]));
    await until(() => n.relays[1]!.counters.dropped.replay === 1 && n.relays[1]!.counters.dropped.auth === 1, 'one replay and one decryption failure');
    assert.equal(n.kernels[1]!.got.length, 1, 'only the genuine datagram was delivered');
    assert.equal(n.relays[1]!.counters.stream!.malformed, 0);
    const closed = new Promise<void>((r) => c.once('close', () => r()));
    c.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    await closed;
    assert.equal(n.relays[1]!.counters.stream!.malformed, 1, 'counted');
    const c2 = connect(streamPortOf(n, 1), '127.0.0.1');
    c2.on('data', () => undefined);
    conns.push(c2);
    await new Promise<void>((r) => c2.once('connect', () => r()));
    c2.write(framed(sealed('after')));
    await until(() => n.kernels[1]!.got.length === 2, 'a new connection is read as before');
  } finally {
    for (const c of conns) c.destroy();
    await n.stop();
  }
});

for (const reads of [false, true]) {
test(`stream carrier: a connection whose datagrams are not acknowledged is closed and datagrams go over UDP (the far end ${reads ? 'takes the bytes: the kernel shows nothing queued' : 'reads nothing'})`, async () => {
  // host 2's stream endpoint is a listener that never acknowledges: a path cut mid-stream
  const held: NetSocket[] = [];
  const sink = createServer((s) => {
    if (reads) s.on('data', () => undefined);
    else s.pause();
    held.push(s);
  });
  await new Promise<void>((r) => sink.listen(0, '127.0.0.1', () => r()));
  const sinkPort = (sink.address() as { port: number }).port;
  const n = await net({ stream: true, streamPorts: [new Map([[names[1]!, sinkPort]])] });
  try {
    await kernelSend(n, 0, 1, frame('dial', 100));
    await until(() => n.relays[0]!.streamsTo('127.0.0.1', sinkPort), 'connected to the sink');
    const big = frame('fill', 60000);
    const end = Date.now() + 10_000;
    while (n.relays[0]!.counters.stream!.stalled === 0 && Date.now() < end) {
      await kernelSend(n, 0, 1, big);
      await new Promise((r) => setTimeout(r, 2));
    }
    assert.equal(n.relays[0]!.counters.stream!.stalled, 1, 'the stalled connection was closed');
    assert.equal(n.relays[0]!.streamsTo('127.0.0.1', sinkPort), false);
    const before = n.kernels[1]!.got.length;
    await kernelSend(n, 0, 1, frame('after', 100));
    await until(() => n.kernels[1]!.got.length > before, 'the next datagram arrives over UDP');
  } finally {
    await n.stop();
    for (const s of held) s.destroy();
    await new Promise<void>((r) => sink.close(() => r()));
  }
});
}
