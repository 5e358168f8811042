/*
 * SpaceExchange (src/ipam/space.ts): requests matched by id, late replies, refusals, the
 * ipam-free channel and the donor order. Equivalent mutants (no observable behaviour changes):
 * - 91 `t.unref()` removed: only decides whether the timer keeps the process alive.
 * - 93 `clearTimeout(t)` removed: the timer then calls done again, which deletes an id already
 *   deleted and resolves a promise already resolved (both no-ops).
 * - 83 `a < b` -> `a <= b` in the donors' tie-break: the donors come from a Set, so two names
 *   compared are never equal and both orders agree.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SpaceExchange, REQUEST_TYPE, REPLY_TYPE, type SpaceMesh, type SpaceReply } from '../../src/ipam/space';
import { formatCidr, parseCidr, lastOf, type Cidr } from '../../src/common/ip';
import type { Logger } from '../../src/common/log';
import type { Gossiper } from '../../src/mesh/gossip';
import type { RingData, Span } from '../../src/ipam/ring';

interface Sent {
  to: string;
  type: string;
  body: any;
}

function world(opts: { spans?: Span[]; give?: (from: string, s: Cidr) => Promise<any>; sendOk?: boolean } = {}) {
  const handlers = new Map<string, (from: string, body: unknown) => void>();
  const channels = new Map<string, Gossiper<any>>();
  const gossiped: any[] = [];
  const sent: Sent[] = [];
  const reachable = new Set<string>();
  const received: { ring: RingData; from: string }[] = [];
  const logs: { level: string; fields: unknown; msg: string }[] = [];
  let sendOk = opts.sendOk ?? true;
  const mesh: SpaceMesh = {
    channel: (name, g) => {
      channels.set(name, g);
      return { name, gossip: (d) => gossiped.push(d) };
    },
    send: (to, type, body) => {
      sent.push({ to, type, body });
      return sendOk;
    },
    onMessage: (type, h) => void handlers.set(type, h),
    isReachable: (p) => reachable.has(p),
  };
  const rec = (level: string) => (fields: unknown, msg: string) => void logs.push({ level, fields, msg });
  const log = { trace: rec('trace'), debug: rec('debug'), info: rec('info'), warn: rec('warn'), error: rec('error') } as unknown as Logger;
  const x = new SpaceExchange({
    self: 'me',
    mesh,
    log,
    spans: () => opts.spans ?? [],
    give: opts.give ?? (async () => ({ reason: 'none' })),
    received: (ring, from) => void received.push({ ring, from }),
  });
  const deliver = (type: string, from: string, body: unknown) => handlers.get(type)!(from, body);
  return { x, sent, gossiped, channels, reachable, received, logs, deliver, setSendOk: (v: boolean) => (sendOk = v) };
}

const subnet = parseCidr('10.32.0.0/12')!;
const ring = (tag: string): RingData => ({ [`t:${tag}`]: { owner: tag, v: 1 } });
const lastRequest = (w: ReturnType<typeof world>) => w.sent.filter((s) => s.type === REQUEST_TYPE).at(-1)!;
const flush = () => new Promise((r) => setImmediate(r));

test('the wire names: requests and replies on their own message types, free space on ipam-free', () => {
  const w = world();
  assert.equal(REQUEST_TYPE, 'ipam-space-req');
  assert.equal(REPLY_TYPE, 'ipam-space-reply');
  assert.ok(w.channels.has('ipam-free'));
});

test('a reply is matched to its request by id, and only from the donor asked', async () => {
  const w = world();
  const p = w.x.request('d1', subnet, 60_000);
  const req = lastRequest(w);
  assert.equal(req.to, 'd1');
  assert.equal(req.body.subnet, formatCidr(subnet));
  assert.equal(typeof req.body.id, 'string');
  // the same id from another peer is not the answer
  w.deliver(REPLY_TYPE, 'd2', { id: req.body.id, ok: false, reason: 'x' });
  // a reply without an id, or no body at all, is ignored
  w.deliver(REPLY_TYPE, 'd1', { ok: false, reason: 'y' });
  w.deliver(REPLY_TYPE, 'd1', null);
  w.deliver(REPLY_TYPE, 'd1', { id: req.body.id, ok: true, block: '10.32.0.0/16', ring: ring('a') });
  const r = await p;
  assert.deepEqual(r, { id: req.body.id, ok: true, block: '10.32.0.0/16', ring: ring('a') });
  assert.deepEqual(w.received, [{ ring: ring('a'), from: 'd1' }]);
});

test('two concurrent requests to one donor each get their own answer', async () => {
  const w = world();
  const p1 = w.x.request('d', subnet, 60_000);
  const id1 = lastRequest(w).body.id;
  const p2 = w.x.request('d', subnet, 60_000);
  const id2 = lastRequest(w).body.id;
  assert.notEqual(id1, id2);
  w.deliver(REPLY_TYPE, 'd', { id: id2, ok: false, reason: 'second' });
  w.deliver(REPLY_TYPE, 'd', { id: id1, ok: true, block: '10.33.0.0/16', ring: ring('first') });
  const [r1, r2] = await Promise.all([p1, p2]);
  assert.equal(r1?.ok && r1.block, '10.33.0.0/16');
  assert.equal(r2?.ok === false && r2.reason, 'second');
  // a refusal merges nothing; the donation is merged once
  assert.deepEqual(w.received, [{ ring: ring('first'), from: 'd' }]);
});

test('a reply after the timeout is not waited for, but a successful one is merged', async () => {
  const w = world();
  const r = await w.x.request('d', subnet, 5);
  assert.equal(r, undefined);
  const id = lastRequest(w).body.id;
  w.deliver(REPLY_TYPE, 'd', { id, ok: false, reason: 'late no' });
  assert.deepEqual(w.received, []);
  w.deliver(REPLY_TYPE, 'd', { id, ok: true, block: '10.32.0.0/16', ring: ring('late') });
  assert.deepEqual(w.received, [{ ring: ring('late'), from: 'd' }]);
  assert.deepEqual(w.logs, [{ level: 'info', fields: { donor: 'd', block: '10.32.0.0/16' }, msg: 'late answer to a space request; taking the space' }]);
  // a late ok without ring data merges nothing
  w.deliver(REPLY_TYPE, 'd', { id, ok: true, block: '10.32.0.0/16' });
  assert.equal(w.received.length, 1);
});

test('a request that cannot be sent resolves at once, without waiting for its timeout', async () => {
  const w = world({ sendOk: false });
  assert.equal(await w.x.request('d', subnet, 600_000), undefined);
  // and a reply to it later is a late one, not an answer to a waiter
  w.setSendOk(true);
  const p = w.x.request('d', subnet, 600_000);
  const id = lastRequest(w).body.id;
  w.deliver(REPLY_TYPE, 'd', { id, ok: false, reason: 'r' });
  assert.equal(((await p) as SpaceReply & { ok: false }).reason, 'r');
});

test('stop() releases every waiter, and their answers are then late', async () => {
  const w = world();
  const ps = [w.x.request('a', subnet, 600_000), w.x.request('b', subnet, 600_000)];
  const ids = w.sent.map((s) => s.body.id);
  w.x.stop();
  assert.deepEqual(await Promise.all(ps), [undefined, undefined]);
  w.deliver(REPLY_TYPE, 'a', { id: ids[0], ok: true, block: '10.32.0.0/16', ring: ring('a') });
  assert.deepEqual(w.received, [{ ring: ring('a'), from: 'a' }]);
});

test('a donor answers with the block and ring, a refusal with its reason, a bad request as such', async () => {
  const given: { from: string; subnet: string }[] = [];
  let answer: any = { block: parseCidr('10.34.0.0/16')!, ring: ring('g') };
  const w = world({
    give: async (from, s) => {
      given.push({ from, subnet: formatCidr(s) });
      if (answer instanceof Error) throw answer;
      return answer;
    },
  });
  w.deliver(REQUEST_TYPE, 'p', { id: 'i1', subnet: '10.32.0.0/12' });
  await flush();
  assert.deepEqual(given, [{ from: 'p', subnet: '10.32.0.0/12' }]);
  assert.deepEqual(w.sent.at(-1), { to: 'p', type: REPLY_TYPE, body: { id: 'i1', ok: true, block: '10.34.0.0/16', ring: ring('g') } });

  answer = { reason: 'no space' };
  w.deliver(REQUEST_TYPE, 'p', { id: 'i2', subnet: '10.32.0.0/12' });
  await flush();
  assert.deepEqual(w.sent.at(-1), { to: 'p', type: REPLY_TYPE, body: { id: 'i2', ok: false, reason: 'no space' } });

  const before = w.sent.length;
  answer = new Error('disk full');
  w.deliver(REQUEST_TYPE, 'p', { id: 'i3', subnet: '10.32.0.0/12' });
  await flush();
  assert.equal(w.sent.length, before, 'a failed donation sends no answer');
  assert.deepEqual(w.logs, [{ level: 'error', fields: { peer: 'p', err: 'disk full' }, msg: 'giving space failed' }]);

  const n = given.length;
  for (const [body, id] of [
    [{ id: 'i4', subnet: 'nonsense' }, 'i4'],
    [{ id: 'i5' }, 'i5'],
    [{ subnet: '10.32.0.0/12' }, ''],
    [{ id: 7, subnet: '10.32.0.0/12' }, ''],
    [null, ''],
  ] as const) {
    w.deliver(REQUEST_TYPE, 'q', body);
    await flush();
    assert.deepEqual(w.sent.at(-1), { to: 'q', type: REPLY_TYPE, body: { id, ok: false, reason: 'bad request' } });
  }
  assert.equal(given.length, n, 'a bad request gives nothing');
});

test('publishFree gossips a change only, and a peer learns it through the channel', () => {
  const a = world();
  assert.equal(a.x.freeOf('me'), undefined);
  a.x.publishFree(100);
  assert.equal(a.gossiped.length, 1);
  assert.equal(a.x.freeOf('me'), 100);
  a.x.publishFree(100);
  assert.equal(a.gossiped.length, 1);
  a.x.publishFree(50);
  assert.equal(a.gossiped.length, 2);
  assert.equal(a.x.freeOf('me'), 50);

  const b = world();
  const gb = b.channels.get('ipam-free')!;
  const ga = a.channels.get('ipam-free')!;
  assert.notDeepEqual(gb.digest!(), ga.digest!());
  gb.merge(a.gossiped.at(-1), 'me');
  assert.equal(b.x.freeOf('me'), 50);
  assert.deepEqual(gb.digest!(), ga.digest!());
  assert.deepEqual(gb.full(), ga.full());
  const all = Array.from({ length: 64 }, (_, i) => i);
  assert.deepEqual(ga.inBuckets!(all), ga.full());
  assert.ok(Object.keys(ga.full()).length > 0);
});

test('donors: reachable owners of space in the subnet, most free first, then by name', () => {
  const s = parseCidr('10.32.0.0/16')!;
  const spans: Span[] = [
    { first: s.base, last: s.base + 99, owner: 'me' },
    { first: s.base + 100, last: s.base + 199, owner: 'b' },
    { first: s.base + 200, last: s.base + 299, owner: 'a' },
    { first: s.base + 300, last: s.base + 399, owner: 'c' },
    { first: s.base + 400, last: s.base + 499, owner: 'gone' },
    { first: s.base + 500, last: lastOf(s), owner: 'rich' },
    // touching the subnet at its last and first address counts; outside does not
    { first: lastOf(s), last: lastOf(s) + 10, owner: 'edge-hi' },
    { first: s.base - 10, last: s.base, owner: 'edge-lo' },
    { first: lastOf(s) + 1, last: lastOf(s) + 100, owner: 'out-hi' },
    { first: s.base - 100, last: s.base - 1, owner: 'out-lo' },
  ];
  const w = world({ spans });
  for (const p of ['a', 'b', 'c', 'rich', 'me', 'edge-hi', 'edge-lo', 'out-hi', 'out-lo']) w.reachable.add(p);
  const ch = w.channels.get('ipam-free')!;
  ch.merge({ rich: { free: 500, v: 1 }, c: { free: 20, v: 1 }, 'edge-hi': { free: 3, v: 1 } }, 'x');
  assert.deepEqual(w.x.donors(s), ['rich', 'c', 'edge-hi', 'a', 'b', 'edge-lo']);
  // a subnet nobody else owns has no donors
  assert.deepEqual(w.x.donors(parseCidr('10.200.0.0/16')!), []);
});
