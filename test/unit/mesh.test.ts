/** The mesh over loopback: no root needed. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { DIGEST_DELAY_MS, Mesh, type MeshInit } from '../../src/mesh/mesh';
import { DuplicateChannelError } from '../../src/mesh/gossip';
import { createLogger } from '../../src/common/log';
import { encodeFrame } from '../../src/mesh/frame';
import { portBase } from '../helpers/ports';

const log = createLogger({ name: 't', level: 'silent' });
let port = portBase();

interface Node {
  mesh: Mesh;
  port: number;
  name: string;
  /** Replaces the flags' targets. */
  connect(addrs: string[]): void;
}

function mk(i: number, targets: string[] = [], extra: Partial<MeshInit> = {}, uid?: string, p = port++): Node {
  const name = `02:00:00:00:00:${i.toString(16).padStart(2, '0')}`;
  const mesh = new Mesh(
    { self: { name, nickname: `h${i}`, uid: uid ?? `u${i}-${p}` }, log },
    {
      port: p,
      listenAddr: '127.0.0.1',
      advertise: `127.0.0.1:${p}`,
      retryMinMs: 100,
      retryMaxMs: 500,
      heartbeatMs: 300,
      refreshMs: 30_000,
      handshakeMs: 2000,
      maxConnections: 200,
      maxPending: 64,
      maxPendingPerHost: 16,
      ...extra,
    },
  );
  const all = [...targets];
  mesh.setTargets('flags', all);
  return { mesh, port: p, name, connect: (addrs) => mesh.setTargets('flags', [...all, ...addrs]) };
}

async function until(f: () => boolean, ms = 8000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error('condition not met before the deadline');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const established = (n: Node) => n.mesh.connections().filter((c) => c.established).length;

test('chained connects close into a full mesh (4 peers, 12 connection ends)', async () => {
  const ns: Node[] = [];
  try {
    ns.push(mk(1));
    await ns[0]!.mesh.start();
    for (let i = 2; i <= 4; i++) {
      const n = mk(i, [`127.0.0.1:${ns[ns.length - 1]!.port}`]);
      ns.push(n);
      await n.mesh.start();
    }
    await until(() => ns.every((n) => established(n) === 3 && n.mesh.peers().length === 4));
    for (const n of ns) assert.equal(new Set(n.mesh.connections().filter((c) => c.established).map((c) => c.peer)).size, 3, 'no duplicate connections kept');
  } finally {
    await Promise.all(ns.map((n) => n.mesh.stop()));
  }
});

test('simultaneous dials resolve to one connection, the same on both sides', async () => {
  const a = mk(1);
  const b = mk(2);
  try {
    await a.mesh.start();
    await b.mesh.start();
    a.connect([`127.0.0.1:${b.port}`]);
    b.connect([`127.0.0.1:${a.port}`]);
    // both sides end with the same one: the connection dialled by the smaller name (a)
    const agreed = () => {
      const ca = a.mesh.connections();
      const cb = b.mesh.connections();
      return ca.length === 1 && cb.length === 1 && ca[0]!.established && cb[0]!.established && ca[0]!.outbound && !cb[0]!.outbound;
    };
    await until(agreed, 5000);
    assert.equal(b.mesh.targetList()[0]?.state, 'established', "b's own target counts as established through a's connection");
  } finally {
    await a.mesh.stop();
    await b.mesh.stop();
  }
});

test('self-connection and name collision are refused', async () => {
  const a = mk(1);
  const clone = mk(1, [], { advertise: undefined }, 'other');
  try {
    await a.mesh.start();
    await clone.mesh.start();
    a.connect([`127.0.0.1:${a.port}`]);
    await until(() => a.mesh.targetList().some((t) => t.state === 'self'));
    clone.connect([`127.0.0.1:${a.port}`]);
    await until(() => clone.mesh.targetList().some((t) => /collision/.test(t.error ?? '')));
    assert.equal(established(a), 0);
  } finally {
    await a.mesh.stop();
    await clone.mesh.stop();
  }
});

test('a peer that comes back is reconnected; unicast follows the mesh', async () => {
  const a = mk(1);
  let b = mk(2, [`127.0.0.1:${a.port}`]);
  const bPort = b.port;
  try {
    await a.mesh.start();
    await b.mesh.start();
    await until(() => a.mesh.isReachable(b.name));
    const got: unknown[] = [];
    b.mesh.onMessage('ping', (from, body) => got.push([from, body]));
    assert.ok(a.mesh.send(b.name, 'ping', { n: 1 }));
    await until(() => got.length === 1);
    assert.deepEqual(got[0], [a.name, { n: 1 }]);
    await b.mesh.stop();
    await until(() => established(a) === 0);
    b = mk(2, [], {}, 'restarted', bPort);
    a.connect([`127.0.0.1:${bPort}`]);
    await b.mesh.start();
    await until(() => established(a) === 1 && established(b) === 1);
  } finally {
    await a.mesh.stop();
    await b.mesh.stop();
  }
});

test('malformed and oversized frames close that connection; the router goes on', async () => {
  const a = mk(1);
  try {
    await a.mesh.start();
    const send = (buf: Buffer) =>
      new Promise<boolean>((resolve) => {
        const s = connect(a.port, '127.0.0.1', () => s.write(buf));
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
    const b = mk(2, [`127.0.0.1:${a.port}`]);
    await b.mesh.start();
    await until(() => established(a) === 1);
    await b.mesh.stop();
  } finally {
    await a.mesh.stop();
  }
});

test('the connection limit refuses more peers, and the refused one is told why', async () => {
  const a = mk(1, [], { maxConnections: 1 });
  const b = mk(2);
  const c = mk(3);
  try {
    await a.mesh.start();
    await b.mesh.start();
    await c.mesh.start();
    b.connect([`127.0.0.1:${a.port}`]);
    await until(() => established(a) === 1);
    c.connect([`127.0.0.1:${a.port}`]);
    await until(() => c.mesh.targetList().some((t) => /connection limit 1 reached/.test(t.error ?? '')));
    assert.equal(established(a), 1);
    assert.equal(established(c), 0, 'the refused peer never counted the connection as established');
  } finally {
    await Promise.all([a.mesh.stop(), b.mesh.stop(), c.mesh.stop()]);
  }
});

test('a connection that never completes its handshake is closed at the deadline, and told why', async () => {
  const a = mk(1, [], { handshakeMs: 300 });
  try {
    await a.mesh.start();
    const s = connect(a.port, '127.0.0.1');
    const chunks: Buffer[] = [];
    s.on('data', (d) => chunks.push(d));
    const closed = await new Promise<boolean>((resolve) => {
      s.on('close', () => resolve(true));
      s.on('error', () => resolve(true));
      setTimeout(() => resolve(false), 5000).unref();
    });
    s.destroy();
    assert.ok(closed, 'closed by the router');
    const text = Buffer.concat(chunks).toString();
    assert.match(text, /no handshake within 300 ms/);
    assert.doesNotMatch(text, /"hello"/, 'the router said nothing about itself to a silent connection');
  } finally {
    await a.mesh.stop();
  }
});

test('300 idle connections do not keep a real peer out', async () => {
  const a = mk(1, [], { handshakeMs: 60_000, maxPending: 64, maxPendingPerHost: 400 });
  const b = mk(2);
  const idle: Socket[] = [];
  try {
    await a.mesh.start();
    await Promise.all(
      Array.from({ length: 300 }, () => new Promise<void>((resolve) => {
        const s = connect(a.port, '127.0.0.1', () => resolve());
        s.on('error', () => resolve());
        s.resume();
        idle.push(s);
      })),
    );
    await b.mesh.start();
    b.connect([`127.0.0.1:${a.port}`]);
    await until(() => established(a) === 1 && established(b) === 1, 10_000);
    assert.ok(a.mesh.connections().filter((c) => !c.established).length <= 64, 'pending connections stay bounded');
  } finally {
    for (const s of idle) s.destroy();
    await a.mesh.stop();
    await b.mesh.stop();
  }
});

test('a gossip channel is registered once; a second registration of the name is an error', () => {
  const a = mk(1);
  const g = { full: () => ({}), merge: () => undefined };
  a.mesh.channel('x', g);
  assert.throws(() => a.mesh.channel('x', g), DuplicateChannelError);
  assert.throws(() => a.mesh.channel('topology', g), DuplicateChannelError);
});

test('settled: a router has heard from the peers it was pointed at, or they failed three dials', async () => {
  const a = mk(1);
  const b = mk(2, [`127.0.0.1:${a.port}`]);
  const dead = port++;
  const c = mk(3, [`127.0.0.1:${dead}`], { retryMinMs: 50, retryMaxMs: 100 });
  try {
    assert.equal(a.mesh.settled().settled, true, 'no targets: nothing to wait for');
    assert.deepEqual(b.mesh.settled(), { settled: false, waitingFor: [`127.0.0.1:${a.port}`] });
    await a.mesh.start();
    await b.mesh.start();
    await until(() => b.mesh.settled().settled);
    await c.mesh.start();
    assert.equal(c.mesh.settled().settled, false);
    await until(() => c.mesh.settled().settled, 5000);
    assert.match(c.mesh.targetList()[0]!.error ?? '', /ECONNREFUSED|refused/);
  } finally {
    await Promise.all([a.mesh.stop(), b.mesh.stop(), c.mesh.stop()]);
  }
});

test('a peer whose published address cannot be dialled is named in the target list, and reached through others', async () => {
  // b publishes a port nobody listens on: a learns it by gossip, through c, and never reaches
  // b there, so its connection maker never identifies the target; the status still has to say
  // whose address it is (its path goes through c). b takes one connection only: otherwise it
  // dials a itself as soon as it learns a's address, and a never needs b's
  const dead = port++;
  const a = mk(1);
  const c = mk(3, [`127.0.0.1:${a.port}`]);
  const b = mk(2, [`127.0.0.1:${c.port}`], { advertise: `127.0.0.1:${dead}`, maxConnections: 1 });
  try {
    for (const n of [a, c, b]) await n.mesh.start();
    await until(() => a.mesh.isReachable(b.name) && a.mesh.targetList().some((t) => t.addr === `127.0.0.1:${dead}`)).catch((e) => {
      throw new Error(`${e.message}: reachable ${a.mesh.isReachable(b.name)}, targets ${JSON.stringify(a.mesh.targetList())}`);
    });
    const t = a.mesh.targetList().find((x) => x.addr === `127.0.0.1:${dead}`)!;
    assert.equal(t.peer, b.name, `the target names its peer: ${JSON.stringify(t)}`);
    assert.equal(a.mesh.nextHop(b.name), c.name, 'reached through c');
  } finally {
    await Promise.all([a, b, c].map((n) => n.mesh.stop()));
  }
});

test("a new neighbour gets the router's own entry at once, not a digest delay later", async () => {
  // a has synced with c already, so its digest to a later connection waits DIGEST_DELAY_MS or
  // more; b's entry was gossiped before b had any connection and went nowhere. Only the own
  // keys a router sends on its first connection bring b's entry to a sooner than that.
  const a = mk(1);
  const c = mk(3, [`127.0.0.1:${a.port}`]);
  const b = mk(2);
  try {
    await a.mesh.start();
    await c.mesh.start();
    await until(() => a.mesh.peers().length === 2 && established(a) === 1);
    await b.mesh.start();
    let connectedAt = 0;
    a.mesh.events.on('connection', (peer) => {
      if (peer === b.name) connectedAt = Date.now();
    });
    b.connect([`127.0.0.1:${a.port}`]);
    await until(() => a.mesh.topology.get(b.name) !== undefined, 5000);
    const took = Date.now() - connectedAt;
    assert.ok(connectedAt > 0 && took < DIGEST_DELAY_MS, `b's entry reached a ${took} ms after they connected`);
    assert.equal(a.mesh.topology.get(b.name)!.addr, `127.0.0.1:${b.port}`);
  } finally {
    await Promise.all([a, b, c].map((n) => n.mesh.stop()));
  }
});

test('an answer to a peer without a route yet goes back the way its message came', async () => {
  // c knows nothing of a (its entry removed here; in a forming mesh it is still on the way)
  // when a's message arrives through b: the answer follows the message back instead of
  // being dropped for want of a route, which left an asker waiting out its deadline
  const b = mk(41);
  const a = mk(40, [`127.0.0.1:${b.port}`]);
  const c = mk(42, [`127.0.0.1:${b.port}`], { maxConnections: 1 });
  try {
    await Promise.all([a, b, c].map((n) => n.mesh.start()));
    await until(() => a.mesh.isReachable(c.name) && c.mesh.isReachable(a.name));
    assert.equal(a.mesh.nextHop(c.name), b.name, 'a reaches c through b only');
    c.mesh.removePeer(a.name);
    assert.equal(c.mesh.isReachable(a.name), false);
    const sent: boolean[] = [];
    c.mesh.onMessage('ask', (from, body) => sent.push(c.mesh.send(from, 'answer', body)));
    const answers: unknown[] = [];
    a.mesh.onMessage('answer', (from, body) => answers.push([from, body]));
    assert.ok(a.mesh.send(c.name, 'ask', { n: 7 }));
    await until(() => answers.length === 1, 3000);
    assert.deepEqual(sent, [true]);
    assert.deepEqual(answers[0], [c.name, { n: 7 }]);
  } finally {
    await Promise.all([a, b, c].map((n) => n.mesh.stop()));
  }
});

test("a new neighbour gets what the router changed just before, not a digest delay later", async () => {
  // two meshes, {a, c} and {b, d}, each synced; a changes its entry and then b connects to a.
  // Neither is on its first connection, so nothing but the recent own keys brings a's change
  // to b sooner than the digest (DIGEST_DELAY_MS or more)
  const a = mk(51);
  const c = mk(53, [`127.0.0.1:${a.port}`]);
  const b = mk(52);
  const d = mk(54, [`127.0.0.1:${b.port}`]);
  try {
    await Promise.all([a, b, c, d].map((n) => n.mesh.start()));
    await until(() => established(a) === 1 && established(b) === 1 && a.mesh.peers().length === 2 && b.mesh.peers().length === 2);
    await new Promise((r) => setTimeout(r, 2.5 * DIGEST_DELAY_MS)); // past the digests of the first connections
    a.mesh.publish({ underlay: '192.0.2.51' });
    let connectedAt = 0;
    b.mesh.events.on('connection', (peer) => {
      if (peer === a.name) connectedAt = Date.now();
    });
    b.connect([`127.0.0.1:${a.port}`]);
    await until(() => b.mesh.topology.get(a.name)?.meta.underlay === '192.0.2.51', 5000);
    const took = Date.now() - connectedAt;
    assert.ok(connectedAt > 0 && took < DIGEST_DELAY_MS, `a's change reached b ${took} ms after they connected`);
  } finally {
    await Promise.all([a, b, c, d].map((n) => n.mesh.stop()));
  }
});
