/** The mesh with a shared secret, over loopback: who gets in, what the wire shows, the keys both ends share. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, createServer, type Server } from 'node:net';
import { Mesh, type MeshInit } from '../../src/mesh/mesh';
import { createLogger } from '../../src/common/log';
import { derivePsk } from '../../src/crypto/handshake';
import { encodeFrame } from '../../src/mesh/frame';
import { portBase } from '../helpers/ports';

const log = createLogger({ name: 't', level: 'silent' });
let port = portBase();
const PSK = derivePsk('open sesame');
const OTHER = derivePsk('another one');

function mk(i: number, psk: Buffer | undefined, extra: Partial<MeshInit> = {}) {
  const p = port++;
  const name = `02:00:00:00:01:${i.toString(16).padStart(2, '0')}`;
  const mesh = new Mesh(
    { self: { name, nickname: `nick-${i}`, uid: `u${i}-${p}` }, log },
    { port: p, listenAddr: '127.0.0.1', advertise: `127.0.0.1:${p}`, retryMinMs: 100, retryMaxMs: 500, heartbeatMs: 300, refreshMs: 30_000, handshakeMs: 2000, maxConnections: 200, maxPending: 64, maxPendingPerHost: 16, psk, ...extra },
  );
  return { mesh, port: p, name };
}

/** A TCP relay to `to` that records every byte both ways. */
async function recorder(to: number): Promise<{ port: number; bytes: () => Buffer; server: Server }> {
  const seen: Buffer[] = [];
  const server = createServer((s) => {
    const up = connect(to, '127.0.0.1');
    s.on('data', (d) => (seen.push(d), up.write(d)));
    up.on('data', (d) => (seen.push(d), s.write(d)));
    s.on('close', () => up.destroy());
    up.on('close', () => s.destroy());
    s.on('error', () => up.destroy());
    up.on('error', () => s.destroy());
  });
  const p = port++;
  await new Promise<void>((r) => server.listen(p, '127.0.0.1', r));
  return { port: p, bytes: () => Buffer.concat(seen), server };
}

async function until(f: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error('condition not met before the deadline');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const established = (m: Mesh) => m.connections().filter((c) => c.established);

test('same secret: connections establish sealed, nothing of the mesh is readable on the wire, both ends derive the same data keys', async () => {
  const a = mk(1, PSK);
  const b = mk(2, PSK);
  const rec = await recorder(b.port);
  try {
    await a.mesh.start();
    await b.mesh.start();
    a.mesh.publish({ gateway: '10.32.0.1' });
    a.mesh.setTargets('flags', [`127.0.0.1:${rec.port}`]);
    await until(() => established(a.mesh).length === 1 && established(b.mesh).length === 1);
    assert.deepEqual(established(a.mesh).map((c) => c.encrypted), [true]);
    assert.deepEqual(established(b.mesh).map((c) => c.encrypted), [true]);
    await until(() => b.mesh.peers().some((p) => p.name === a.name && p.meta.gateway === '10.32.0.1'));
    await until(() => a.mesh.isReachable(b.name));
    const got = new Promise<unknown>((r) => b.mesh.onMessage('ping', (_f, body) => r(body)));
    assert.ok(a.mesh.send(b.name, 'ping', { secret: 'payload-pattern-xyz' }));
    assert.deepEqual(await got, { secret: 'payload-pattern-xyz' });
    const wire = rec.bytes().toString('latin1');
    for (const clear of ['"t"', 'nick-1', 'nick-2', '10.32.0.1', 'payload-pattern-xyz', 'gossip']) assert.ok(!wire.includes(clear), `${clear} is not on the wire`);
    const ka = a.mesh.dataKeys(b.name, 'sleeve')!;
    const kb = b.mesh.dataKeys(a.name, 'sleeve')!;
    assert.ok(ka && kb, 'both sides have data keys');
    assert.deepEqual(ka.tx, kb.rx);
    assert.deepEqual(ka.rx, kb.tx);
    assert.notDeepEqual(ka.tx, ka.rx, 'one key per direction');
  } finally {
    await Promise.all([a.mesh.stop(), b.mesh.stop()]);
    rec.server.close();
  }
});

test('without a secret the same handshake runs and the connection is plain; no data keys', async () => {
  const a = mk(1, undefined);
  const b = mk(2, undefined);
  try {
    await a.mesh.start();
    await b.mesh.start();
    a.mesh.setTargets('flags', [`127.0.0.1:${b.port}`]);
    await until(() => established(a.mesh).length === 1 && established(b.mesh).length === 1);
    assert.deepEqual(established(a.mesh).map((c) => c.encrypted), [false]);
    assert.equal(a.mesh.dataKeys(b.name, 'sleeve'), undefined);
  } finally {
    await Promise.all([a.mesh.stop(), b.mesh.stop()]);
  }
});

test('another secret is refused: the dialler is told the password differs, and learns nothing of the mesh', async () => {
  const a = mk(1, OTHER);
  const b = mk(2, PSK);
  const rec = await recorder(b.port);
  try {
    await a.mesh.start();
    await b.mesh.start();
    b.mesh.publish({ gateway: '10.32.0.9' });
    a.mesh.setTargets('flags', [`127.0.0.1:${rec.port}`]);
    await until(() => a.mesh.targetList().some((t) => /password differs/.test(t.error ?? '')));
    assert.equal(established(a.mesh).length, 0);
    assert.equal(established(b.mesh).length, 0);
    assert.deepEqual(a.mesh.peers().map((p) => p.name), [a.name], 'no topology learnt');
    const wire = rec.bytes().toString('latin1');
    for (const clear of ['nick-2', '10.32.0.9', 'gossip', '"hello"']) assert.ok(!wire.includes(clear), `${clear} is not on the wire`);
  } finally {
    await Promise.all([a.mesh.stop(), b.mesh.stop()]);
    rec.server.close();
  }
});

test('an encrypted and a plain router refuse each other, each saying which side lacks the password', async () => {
  const enc = mk(1, PSK);
  const plain = mk(2, undefined);
  try {
    await enc.mesh.start();
    await plain.mesh.start();
    plain.mesh.setTargets('flags', [`127.0.0.1:${enc.port}`]);
    enc.mesh.setTargets('flags', [`127.0.0.1:${plain.port}`]);
    await until(() => plain.mesh.targetList().some((t) => /uses encryption \(a password\) and this router has none/.test(t.error ?? '')));
    await until(() => enc.mesh.targetList().some((t) => /does not use encryption and this router does/.test(t.error ?? '')));
    assert.equal(established(enc.mesh).length + established(plain.mesh).length, 0);
  } finally {
    await Promise.all([enc.mesh.stop(), plain.mesh.stop()]);
  }
});

test('a JSON hello without the handshake is refused, and gets no hello back', async () => {
  const a = mk(1, PSK);
  try {
    await a.mesh.start();
    const text = await new Promise<string>((resolve) => {
      const chunks: Buffer[] = [];
      const s = connect(a.port, '127.0.0.1', () => s.write(encodeFrame({ t: 'hello', proto: 1, min: 1, max: 1, name: '02:00:00:00:01:99', nickname: 'x', uid: 'y' })));
      s.on('data', (d) => chunks.push(d));
      s.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
      s.on('error', () => undefined);
      setTimeout(() => (s.destroy(), resolve('timeout')), 5000).unref();
    });
    assert.notEqual(text, 'timeout', 'the router closed the connection');
    assert.match(text, /not a weft handshake/);
    assert.doesNotMatch(text, /nick-1|"hello"/);
    assert.equal(established(a.mesh).length, 0);
  } finally {
    await a.mesh.stop();
  }
});
