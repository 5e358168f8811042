/** Mesh frames: compressed for peers that read them (protocol 3), plain otherwise; bounded either way. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deflateSync } from 'node:zlib';
import { COMPRESS_FROM, encodeFrame, FrameError, FrameReader, MAX_FRAME, parseFrame } from '../../src/mesh/frame';
import { Mesh } from '../../src/mesh/mesh';
import { VersionedMap } from '../../src/common/crdt';
import { createLogger } from '../../src/common/log';
import { portBase } from '../helpers/ports';

const log = createLogger({ name: 't', level: 'silent' });

/** A gossip-like message of `n` keys that repeat peer names, as the topology's do. */
function bigMessage(n: number): Record<string, unknown> {
  const data: Record<string, unknown> = {};
  for (let i = 0; i < n; i++) data[`e|0a:00:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}|0a:00:00:00:00:01`] = { v: i + 1, up: true };
  return { t: 'gossip', ch: 'topology', data };
}

const body = (frame: Buffer) => {
  const r = new FrameReader();
  const [b, ...rest] = r.pushRaw(frame);
  assert.equal(rest.length, 0);
  return b!;
};

test('a large message is compressed when asked, a small one never; both read back as they were', () => {
  const big = bigMessage(2000);
  const json = JSON.stringify(big);
  assert.ok(json.length >= COMPRESS_FROM);
  const z = encodeFrame(big, true);
  assert.equal(body(z)[0], 0x78, 'zlib header');
  assert.ok(z.length * 4 < json.length, `compressed ${z.length} of ${json.length} bytes`);
  assert.deepEqual(parseFrame(body(z)), big);
  const plain = encodeFrame(big);
  assert.equal(body(plain).toString(), json, 'not asked: plain JSON');
  const small = { t: 'hb' };
  assert.equal(body(encodeFrame(small, true)).toString(), JSON.stringify(small), 'under COMPRESS_FROM: plain even when asked');
});

test('a compressed frame that inflates past the frame limit, or to something not JSON, is a protocol error', () => {
  const bomb = deflateSync(Buffer.alloc(MAX_FRAME + 1, 0x20));
  assert.ok(bomb.length < 64 << 10);
  assert.throws(() => parseFrame(bomb), (e) => e instanceof FrameError && /inflate/.test(e.message));
  assert.throws(() => parseFrame(deflateSync('[1,2]')), FrameError);
  assert.throws(() => parseFrame(Buffer.from([0x78, 1, 2, 3])), FrameError);
});

test('two routers of protocol 3 sync a large channel through compressed frames: the state arrives whole, in a fraction of its JSON', async () => {
  let port = portBase() + 40;
  const out = new Map<string, number>();
  const mk = (i: number, targets: string[]) => {
    const p = port++;
    const mesh = new Mesh(
      {
        self: { name: `02:00:00:00:01:${i.toString(16).padStart(2, '0')}`, nickname: `z${i}`, uid: `z${i}-${p}` },
        log,
        traffic: (dir, kind, bytes) => void (dir === 'out' && i === 1 && out.set(kind, (out.get(kind) ?? 0) + bytes)),
      },
      { port: p, listenAddr: '127.0.0.1', advertise: `127.0.0.1:${p}`, retryMinMs: 100, retryMaxMs: 500, heartbeatMs: 300, refreshMs: 30_000, handshakeMs: 2000, maxConnections: 20, maxPending: 8, maxPendingPerHost: 4 },
    );
    mesh.setTargets('flags', targets);
    return { mesh, port: p };
  };
  const maps = [new VersionedMap<unknown>(), new VersionedMap<unknown>()];
  const data = bigMessage(3000).data as Record<string, { v: number; up: boolean }>;
  for (const [k, e] of Object.entries(data)) maps[0]!.put(k, e);
  const a = mk(1, []);
  a.mesh.channel('big', { full: () => maps[0]!.toData(), merge: (d) => maps[0]!.merge(d) });
  await a.mesh.start();
  const b = mk(2, [`127.0.0.1:${a.port}`]);
  b.mesh.channel('big', { full: () => maps[1]!.toData(), merge: (d) => maps[1]!.merge(d) });
  try {
    await b.mesh.start();
    const end = Date.now() + 8000;
    while (Object.keys(maps[1]!.toData()).length < 3000 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(maps[1]!.toData(), maps[0]!.toData());
    const sent = [...out].filter(([k]) => k.startsWith('gossip:big')).reduce((s, [, n]) => s + n, 0);
    const json = JSON.stringify({ t: 'gossip', ch: 'big', data: maps[0]!.toData(), a: true }).length;
    assert.ok(sent > 0 && sent * 4 < json, `sent ${sent} bytes for ${json} bytes of JSON`);
  } finally {
    await b.mesh.stop();
    await a.mesh.stop();
  }
});
