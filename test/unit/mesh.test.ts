/** The mesh over loopback: no root needed. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { Mesh } from '../../src/mesh/mesh';
import { createLogger } from '../../src/common/log';
import { encodeFrame } from '../../src/mesh/frame';

const log = createLogger({ name: 't', level: 'silent' });
let port = 20000 + Math.floor(Math.random() * 20000);

function mk(i: number, targets: string[] = [], extra: Partial<ConstructorParameters<typeof Mesh>[0]> = {}) {
  const p = port++;
  const name = `02:00:00:00:00:${i.toString(16).padStart(2, '0')}`;
  return new Mesh({ name, nickname: `h${i}`, uid: `u${i}-${p}`, port: p, listenAddr: '127.0.0.1', advertise: `127.0.0.1:${p}`, targets, log, retryMinMs: 100, retryMaxMs: 500, heartbeatMs: 300, ...extra });
}

async function until(f: () => boolean, ms = 8000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error('condition not met before the deadline');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const established = (m: Mesh) => m.connections().filter((c) => c.established).length;

test('chained connects close into a full mesh (4 peers, 12 connection ends)', async () => {
  const ms: Mesh[] = [];
  try {
    ms.push(mk(1));
    await ms[0]!.start();
    for (let i = 2; i <= 4; i++) {
      const m = mk(i, [`127.0.0.1:${ms[ms.length - 1]!.o.port}`]);
      ms.push(m);
      await m.start();
    }
    await until(() => ms.every((m) => established(m) === 3 && m.peers().length === 4));
    for (const m of ms) assert.equal(new Set(m.connections().filter((c) => c.established).map((c) => c.hello!.name)).size, 3, 'no duplicate connections kept');
  } finally {
    await Promise.all(ms.map((m) => m.stop()));
  }
});

test('simultaneous dials resolve to one connection, the same on both sides', async () => {
  const a = mk(1);
  const b = mk(2);
  try {
    a.connect([`127.0.0.1:${b.o.port}`]);
    b.connect([`127.0.0.1:${a.o.port}`]);
    await a.start();
    await b.start();
    await until(() => established(a) === 1 && established(b) === 1);
    // the duel is over once neither side has a connection other than the one it kept
    await until(() => a.connections().length === 1 && b.connections().length === 1);
    assert.equal(established(a), 1);
    assert.equal(established(b), 1);
    assert.equal(a.connections()[0]!.hello!.uid, b.o.uid);
  } finally {
    await a.stop();
    await b.stop();
  }
});

test('self-connection and name collision are refused', async () => {
  const a = mk(1);
  const clone = new Mesh({ ...a.o, port: port++, uid: 'other', advertise: undefined, targets: [] });
  try {
    await a.start();
    await clone.start();
    a.connect([`127.0.0.1:${a.o.port}`]);
    await until(() => a.targetList().some((t) => t.state === 'self'));
    clone.connect([`127.0.0.1:${a.o.port}`]);
    await until(() => clone.targetList().some((t) => /collision/.test(t.error ?? '')));
    assert.equal(established(a), 0);
  } finally {
    await a.stop();
    await clone.stop();
  }
});

test('a peer that comes back is reconnected; unicast follows the mesh', async () => {
  const a = mk(1);
  let b = mk(2, [`127.0.0.1:${a.o.port}`]);
  const bPort = b.o.port;
  try {
    await a.start();
    await b.start();
    await until(() => a.isReachable(b.name));
    const got: unknown[] = [];
    b.onMessage('ping', (from, body) => got.push([from, body]));
    assert.ok(a.send(b.name, 'ping', { n: 1 }));
    await until(() => got.length === 1);
    assert.deepEqual(got[0], [a.name, { n: 1 }]);
    await b.stop();
    await until(() => established(a) === 0);
    b = new Mesh({ ...b.o, uid: 'restarted', port: bPort, targets: [] });
    a.connect([`127.0.0.1:${bPort}`]);
    await b.start();
    await until(() => established(a) === 1 && established(b) === 1);
  } finally {
    await a.stop();
    await b.stop();
  }
});

test('malformed and oversized frames close that connection; the router goes on', async () => {
  const a = mk(1);
  try {
    await a.start();
    const send = (buf: Buffer) =>
      new Promise<boolean>((resolve) => {
        const s = connect(a.o.port, '127.0.0.1', () => s.write(buf));
        s.resume();
        s.on('close', () => resolve(true));
        s.on('error', () => resolve(true));
        setTimeout(() => {
          s.destroy();
          resolve(false);
        }, 3000);
      });
    const huge = Buffer.alloc(4);
    huge.writeUInt32BE(100 << 20);
    assert.ok(await send(huge), 'oversized frame closes');
    assert.ok(await send(encodeFrame({ t: 'hello', proto: 'nope' })), 'bad hello closes');
    const junk = Buffer.concat([Buffer.from([0, 0, 0, 3]), Buffer.from('{x]')]);
    assert.ok(await send(junk), 'non-JSON closes');
    const b = mk(2, [`127.0.0.1:${a.o.port}`]);
    await b.start();
    await until(() => established(a) === 1);
    await b.stop();
  } finally {
    await a.stop();
  }
});

test('the connection limit refuses more peers, and the refused one is told why', async () => {
  const a = mk(1, [], { maxConnections: 1 });
  const b = mk(2);
  const c = mk(3);
  try {
    await a.start();
    await b.start();
    await c.start();
    b.connect([`127.0.0.1:${a.o.port}`]);
    await until(() => established(a) === 1);
    c.connect([`127.0.0.1:${a.o.port}`]);
    await until(() => c.targetList().some((t) => /connection limit 1 reached/.test(t.error ?? '')));
    assert.equal(established(a), 1);
  } finally {
    await Promise.all([a.stop(), b.stop(), c.stop()]);
  }
});
