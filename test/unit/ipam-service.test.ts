/**
 * The IPAM service and its API against an in-memory mesh and store: no sockets, no root.
 * Equivalent mutants (src/ipam/service.ts), no observable behaviour changes:
 * - 153 `this.freeTimer.unref()` removed, 288 `t.unref()` removed: only whether a timer keeps the process alive.
 * - 283 `clearTimeout(t)` removed: the timer then calls `done` again, whose `off` and `resolve` are no-ops.
 * - 94 the initial `owned` list: the constructor replaces it (refreshOwned) before anything reads it.
 * - 119 `if (d)` -> true (step after every Paxos merge): a merge that brought nothing new leaves
 *   consensus as it was, so the extra step changes nothing and gossips nothing (Consensus.step
 *   returns undefined when this peer's entry is unchanged); reachability changes step via watch().
 * - 200 and 221 `p === this.c.self` -> false in the reachability test: Consensus never asks it
 *   about this peer (its step() and known() count `self` before calling it).
 * - 240 `exact !== undefined` -> true: without an exact address `ring.ownerOf(undefined)` is
 *   undefined, so nothing is thrown, as before.
 * - 253 `exact !== undefined` -> false, and `!(e instanceof NoSpaceError) && exact !== undefined`:
 *   the allocator throws NoSpaceError only when it searches (no exact address), and only
 *   NoSpaceError then; with an exact address it throws AddressInUseError. So the clauses decide
 *   the same either way.
 * - 265 the `''` for a status without a reason: every status but "ready" carries one.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '../../src/common/log';
import { formatCidr, formatIPv4, lastOf, parseAddrWithPrefix, parseCidr, type Cidr } from '../../src/common/ip';
import { AddressInUseError, NoSpaceError } from '../../src/common/errors';
import { Ring, type RingData } from '../../src/ipam/ring';
import { Consensus, type PaxosEntry } from '../../src/ipam/consensus';
import type { MapData } from '../../src/common/crdt';
import { IpamService, donation, intersectCidrs, type IpamFile, type IpamInit } from '../../src/ipam/service';
import { REPLY_TYPE, REQUEST_TYPE, SpaceExchange, type SpaceReply } from '../../src/ipam/space';
import { allocatable, GATEWAY_NETWORK } from '../../src/ipam/allocator';
import { IpamApi } from '../../src/router/ipam-api';
import { ApiServer } from '../../src/router/http';
import { gatewayKey } from '../../src/datapath/bridge-addrs';
import { FakeNet, type FakeMesh } from '../helpers/fake-mesh';
import { recordingLogger } from '../helpers/record-log';

const log = createLogger({ name: 't', level: 'silent' });

// The service's waits use unref'd timers (they must never keep a router alive). A test waiting
// on one would leave Node 20's runner with an empty event loop and a pending promise, which it
// cancels ("Promise resolution is still pending"); this ref'd timer holds the loop until the
// file is done.
const holdLoop = setInterval(() => undefined, 60_000);
after(() => clearInterval(holdLoop));
const range = parseCidr('10.32.0.0/12')!;
const A = '02:00:00:00:00:0a';
const B = '02:00:00:00:00:0b';
const C = '02:00:00:00:00:0c';
const key = (id: string) => ({ network: 'n', containerId: id, ifname: 'eth0' });

/** An IPAM service whose "disk" is a copy taken at each commit. */
function node(net: FakeNet, name: string, init: IpamInit, o: { spaceTimeoutMs?: number } = {}) {
  const mesh = net.node(name);
  const disk: { data?: IpamFile; commits: number; fail?: Error } = { commits: 0 };
  let ipam: IpamService;
  const commit = async () => {
    if (disk.fail) throw disk.fail;
    disk.commits++;
    disk.data = structuredClone(ipam.snapshot());
  };
  ipam = new IpamService({ self: name, mesh, log, commit }, { range, defaultSubnet: range, init, spaceTimeoutMs: o.spaceTimeoutMs ?? 2000, freeEveryMs: 60_000 });
  return { ipam, mesh, disk };
}

const owners = (ipam: IpamService) => Object.fromEntries(ipam.ring.sizes());

/** Runs the event loop until `cond` holds, failing after 5 s. */
async function until(cond: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

/** A owns the whole range; B, an observer with A's ring, and B's space exchange. */
async function donorAndRequester() {
  const net = new FakeNet();
  const a = node(net, A, { mode: 'consensus', size: 1 });
  const b = node(net, B, { mode: 'observer' });
  await a.ipam.start();
  b.mesh.syncFrom(a.mesh);
  return { net, a, b, ex: (b.ipam as unknown as { space: SpaceExchange }).space };
}

test('a lone host owns the range; a second one asks it and gets 10.40.0.0/13, as in the seeds', async () => {
  const net = new FakeNet();
  const a = node(net, A, { mode: 'consensus', size: 1 });
  const b = node(net, B, { mode: 'observer' });
  await a.ipam.start();
  assert.deepEqual(owners(a.ipam), { [A]: 2 ** 20 });
  b.mesh.syncFrom(a.mesh);
  await b.ipam.start();
  await a.ipam.allocate(key('a1'), range, undefined, { bridge: 'weave' });
  const rec = await b.ipam.allocate(key('b1'), range, undefined, { bridge: 'weave' });
  assert.equal(rec.address, '10.40.0.1/12');
  assert.deepEqual(b.ipam.ring.ownedBy(B).map(formatCidr), ['10.40.0.0/13']);
  assert.deepEqual(a.ipam.ring.ownedBy(A).map(formatCidr), ['10.32.0.0/13'], 'the donor gave exactly that block');
  assert.ok(a.disk.data!.ring, 'the donor persisted the gift');
  assert.deepEqual(b.disk.data!.allocations.map((x) => x.address), [], 'allocations are committed by the API, not here');
  await a.ipam.stop();
  await b.ipam.stop();
});

test('two concurrent space requests to one donor each get their own answer, even when the replies cross', async () => {
  const { net, a, b, ex } = await donorAndRequester();
  const low = parseCidr('10.32.0.0/16')!;
  const high = parseCidr('10.47.0.0/16')!;
  net.hold = true;
  const p1 = ex.request(A, low, 2000);
  const p2 = ex.request(A, high, 2000);
  net.deliver((s) => s.type === REQUEST_TYPE);
  // let the donor answer both (its give() awaits the commit), then deliver the replies newest first
  await until(() => net.queue.filter((s) => s.type === REPLY_TYPE).length === 2, 'both replies');
  const replies = net.queue.filter((s) => s.type === REPLY_TYPE);
  assert.equal(replies.length, 2);
  net.queue.reverse();
  net.deliver();
  const [r1, r2] = (await Promise.all([p1, p2])) as SpaceReply[];
  assert.ok(r1!.ok && r2!.ok);
  const inside = (r: SpaceReply, c: Cidr) => r.ok && parseCidr(r.block)!.base >= c.base && parseCidr(r.block)!.base < c.base + 2 ** (32 - c.prefix);
  assert.ok(inside(r1!, low), `first request answered with a block in ${formatCidr(low)}: ${r1!.ok && r1!.block}`);
  assert.ok(inside(r2!, high), `second request answered with a block in ${formatCidr(high)}: ${r2!.ok && r2!.block}`);
  await a.ipam.stop();
});

test('a reply that comes after its request gave up still brings the space: nothing is lost', async () => {
  const { net, a, b, ex } = await donorAndRequester();
  net.hold = true;
  const r = ex.request(A, range, 30);
  net.deliver((s) => s.type === REQUEST_TYPE);
  assert.equal(await r, undefined, 'timed out');
  await until(() => net.queue.some((s) => s.type === REPLY_TYPE), 'the late reply');
  net.deliver();
  const mine = b.ipam.ring.ownedBy(B).map(formatCidr);
  assert.deepEqual(mine, ['10.40.0.0/13'], 'the late gift is taken');
  await a.ipam.stop();
});

test('consensus waits until the router has heard from the peers it was pointed at', async () => {
  const net = new FakeNet();
  const b = node(net, B, { mode: 'consensus', size: 2 });
  const c = node(net, C, { mode: 'consensus', size: 2 });
  b.mesh.settledNow = false;
  b.mesh.waitingFor = ['172.30.0.11:6783'];
  await b.ipam.start();
  await c.ipam.start();
  // gossip between b and c is instant here; c proposes, b must not take part yet
  c.ipam.step();
  b.ipam.step();
  await new Promise((r) => setTimeout(r, 50)); // every paxos round the gossip triggers has run
  assert.equal(b.ipam.ring.initialised(), false);
  assert.equal(c.ipam.ring.initialised(), false, 'no quorum of 2 without b');
  assert.deepEqual(b.ipam.status(), { status: 'awaiting consensus', reason: 'waiting to hear from 172.30.0.11:6783' });
  // b hears from its target (host 1, which has a ring): it takes that ring and never votes
  const a = node(net, A, { mode: 'consensus', size: 1 });
  await a.ipam.start();
  b.mesh.syncFrom(a.mesh);
  b.mesh.settledNow = true;
  net.changed();
  assert.deepEqual(owners(b.ipam), { [A]: 2 ** 20 }, "b has host 1's ring");
  c.mesh.syncFrom(b.mesh);
  assert.deepEqual(owners(c.ipam), { [A]: 2 ** 20 }, 'and c gets it from b: one ring, no split');
  for (const n of [a, b, c]) await n.ipam.stop();
});

test('allocation never hangs: no space within the deadline is NoSpaceError saying why', async () => {
  const net = new FakeNet();
  const b = node(net, B, { mode: 'consensus', size: 3 }, { spaceTimeoutMs: 300 });
  await b.ipam.start();
  await assert.rejects(b.ipam.allocate(key('x'), range, undefined, { bridge: 'weave' }), /no address within the deadline: awaiting consensus \(quorum 2, 1 known\)/);
  await b.ipam.stop();
});

test('rmpeer takes over a peer gone for good, never one still reachable', async () => {
  const net = new FakeNet();
  const a = node(net, A, { mode: 'seed', names: [A, B] });
  const b = node(net, B, { mode: 'seed', names: [A, B] });
  await assert.rejects(a.ipam.rmpeer(B), /still reachable/);
  net.cut.add(`${A}|${B}`);
  const r = await a.ipam.rmpeer(B);
  assert.equal(r.addresses, 2 ** 19);
  assert.deepEqual(owners(a.ipam), { [A]: 2 ** 20 });
  assert.equal(a.disk.commits, 1, 'persisted');
  await assert.rejects(a.ipam.rmpeer(A), /itself/);
  void b;
});

/** The API over an in-memory service: gateways, commit before answer, undo on a failed commit. */
function api(disk: { fail?: Error; commits: number }) {
  const net = new FakeNet();
  const n = node(net, A, { mode: 'consensus', size: 1 });
  const onBridge: string[] = [];
  const server = new ApiServer(log);
  const ipamApi = new IpamApi({
    ipam: n.ipam,
    commit: async () => {
      if (disk.fail) throw disk.fail;
      disk.commits++;
    },
    bridge: { name: 'weave', ensure: async () => ({ ifname: 'weave', address: '02:aa:00:00:00:01', mtu: 1450, operstate: 'UP', flags: ['UP'] }) },
    gateways: {
      gatewayFor: (s) => n.ipam.allocate(gatewayKey('weave', s), s, undefined, { bridge: 'weave' }),
      ensure: async (c) => void onBridge.push(c),
    },
    mtu: () => 1450,
    log,
  });
  ipamApi.register(server);
  return { ipamApi, n, onBridge };
}

test('API: ADD gets the gateway first, then the pod address; the answer comes after the commit', async () => {
  const disk = { commits: 0 } as { commits: number; fail?: Error };
  const { ipamApi, n, onBridge } = api(disk);
  await n.ipam.start();
  const r = await ipamApi.allocate({ ...key('p1'), bridge: 'weave' });
  assert.deepEqual(r, { address: '10.32.0.2/12', gateway: '10.32.0.1', mtu: 1450, bridge: { name: 'weave', mac: '02:aa:00:00:00:01' } });
  assert.equal(disk.commits, 1);
  assert.deepEqual(onBridge, ['10.32.0.1/12']);
  assert.equal(n.ipam.allocator.list().filter((x) => x.network === GATEWAY_NETWORK).length, 1);
  await assert.rejects(ipamApi.allocate({ ...key('p2'), bridge: 'other' }), /^Error: bridge: "other": this router serves bridge "weave"|bridge: "other"/);
  await n.ipam.stop();
});

test('API: a failed commit leaves memory as it was on disk (no allocation, no release)', async () => {
  const disk = { commits: 0 } as { commits: number; fail?: Error };
  const { ipamApi, n } = api(disk);
  await n.ipam.start();
  await ipamApi.allocate({ ...key('keep'), bridge: 'weave' });
  disk.fail = new Error('disk full');
  await assert.rejects(ipamApi.allocate({ ...key('p1'), bridge: 'weave' }), /disk full/);
  assert.equal(n.ipam.allocator.get(key('p1')), undefined, 'the failed ADD holds nothing');
  await assert.rejects(ipamApi.release(key('keep')), /disk full/);
  assert.ok(n.ipam.allocator.get(key('keep')), 'a release that did not reach the disk did not happen');
  disk.fail = undefined;
  assert.deepEqual(await ipamApi.release(key('keep')), { released: true, address: '10.32.0.2/12' });
  assert.deepEqual(await ipamApi.release(key('keep')), { released: false });
  await n.ipam.stop();
});

test('API: GC releases what is not listed; the gateways\' reserved network name cannot be named', async () => {
  const disk = { commits: 0 } as { commits: number; fail?: Error };
  const { ipamApi, n } = api(disk);
  await n.ipam.start();
  await ipamApi.allocate({ ...key('a'), bridge: 'weave' });
  await ipamApi.allocate({ ...key('b'), bridge: 'weave' });
  const r = await ipamApi.gc({ network: 'n', valid: [{ containerId: 'a', ifname: 'eth0' }] });
  assert.deepEqual(r.released.map((x) => x.containerId), ['b']);
  assert.ok(n.ipam.allocator.get(key('a')));
  await assert.rejects(ipamApi.gc({ network: GATEWAY_NETWORK, valid: [] }), /network: invalid network name/);
  assert.equal(n.ipam.allocator.list().filter((x) => x.network === GATEWAY_NETWORK).length, 1, 'GC never touches the gateway');
  await n.ipam.stop();
});

test('space exchange: a malformed request is answered "bad request", never thrown', async () => {
  const net = new FakeNet();
  const a = node(net, A, { mode: 'consensus', size: 1 });
  const probe: FakeMesh = net.node(B);
  const got: unknown[] = [];
  probe.onMessage(REPLY_TYPE, (_f, body) => got.push(body));
  probe.send(A, REQUEST_TYPE, { id: 'x1', subnet: 'nonsense' });
  await until(() => got.length > 0, 'the answer');
  assert.deepEqual(got, [{ id: 'x1', ok: false, reason: 'bad request' }]);
  void a;
});

test('API: undoing a release whose commit failed never takes the address back from an ADD that got it meanwhile', async () => {
  // commits wait until the test says how they end
  const commits: ((e?: Error) => void)[] = [];
  const nextCommit = async () => {
    for (let i = 0; i < 100 && commits.length === 0; i++) await new Promise((r) => setImmediate(r));
    const c = commits.shift();
    assert.ok(c, 'a commit was asked for');
    return c;
  };
  const net = new FakeNet();
  const n = node(net, A, { mode: 'consensus', size: 1 });
  await n.ipam.start();
  const server = new IpamApi({
    ipam: n.ipam,
    commit: () => new Promise<void>((resolve, reject) => commits.push((e) => (e ? reject(e) : resolve()))),
    bridge: { name: 'weave', ensure: async () => ({ ifname: 'weave', address: '02:aa:00:00:00:01', mtu: 1450, operstate: 'UP', flags: ['UP'] }) },
    gateways: { gatewayFor: (s) => n.ipam.allocate(gatewayKey('weave', s), s, undefined, { bridge: 'weave' }), ensure: async () => undefined },
    mtu: () => 1450,
    log,
  });
  const first = server.allocate({ ...key('old'), bridge: 'weave', address: '10.32.9.9' });
  (await nextCommit())();
  await first;
  const release = server.release(key('old'));
  const failRelease = await nextCommit();
  const add = server.allocate({ ...key('new'), bridge: 'weave', address: '10.32.9.9' });
  const okAdd = await nextCommit();
  failRelease(new Error('disk full'));
  await assert.rejects(release, /disk full/);
  okAdd();
  await add;
  assert.equal(n.ipam.allocator.get(key('new'))?.address, '10.32.9.9/12');
  assert.equal(n.ipam.allocator.get(key('old')), undefined, 'the undo did not put the old holder back over the new one');
  await n.ipam.stop();
});

/** A service over a small range, so that "full" is a few allocations away. */
function small(net: FakeNet, name: string, init: IpamInit, cidr: string, spaceTimeoutMs = 200) {
  const mesh = net.node(name);
  const disk = { commits: 0 };
  const r = parseCidr(cidr)!;
  const ipam = new IpamService({ self: name, mesh, log, commit: async () => void disk.commits++ }, { range: r, defaultSubnet: r, init, spaceTimeoutMs, freeEveryMs: 60_000 });
  return { ipam, mesh, disk, r };
}

async function fill(ipam: IpamService, r: Cidr): Promise<number> {
  let n = 0;
  for (;;) {
    try {
      await ipam.allocate(key(`f${n}`), r, undefined, { bridge: 'weave' });
      n++;
    } catch {
      return n;
    }
  }
}

test('readiness: observer without a ring, ready with space, no space saying why, owners unreachable', async () => {
  const net = new FakeNet();
  const o = small(net, C, { mode: 'observer' }, '10.0.0.0/28');
  assert.deepEqual(o.ipam.status(), { status: 'awaiting consensus', reason: 'observer: waiting for the ring from a peer' });

  const a = small(net, A, { mode: 'seed', names: [A, B] }, '10.0.0.0/28');
  const b = small(net, B, { mode: 'seed', names: [A, B] }, '10.0.0.0/28');
  assert.deepEqual(a.ipam.status(), { status: 'ready' });
  assert.equal(a.ipam.freeOf(A), a.ipam.allocator.freeCount());
  assert.ok(a.ipam.freeOf(A)! > 0);
  // B is cut off and A uses up its own half: nobody to ask
  net.cut.add(`${A}|${B}`);
  assert.ok((await fill(a.ipam, a.r)) > 0);
  assert.equal(a.ipam.canAskPeers(), false);
  assert.deepEqual(a.ipam.status(), { status: 'all ranges owned by unreachable peers', reason: `owners: ${B}` });
  // B reachable again, with space to give: ready (it can ask)
  net.cut.clear();
  assert.equal(a.ipam.canAskPeers(), true);
  assert.deepEqual(a.ipam.status(), { status: 'ready' });
  void b;
});

test('readiness: a lone full host reports no space, first generically, then with the reason of its last try', async () => {
  const net = new FakeNet();
  const a = small(net, A, { mode: 'seed', names: [A] }, '10.0.0.0/29', 100);
  await a.ipam.allocate(key('x'), a.r, undefined, { bridge: 'weave' });
  while (a.ipam.allocator.freeCount() > 0) a.ipam.allocator.allocate(key(`y${a.ipam.allocator.freeCount()}`), a.r, undefined, { bridge: 'weave' });
  assert.deepEqual(a.ipam.status(), { status: 'no space', reason: "no free address in this peer's space" });
  await assert.rejects(a.ipam.allocate(key('z'), a.r, undefined, { bridge: 'weave' }), (e: Error) => e instanceof NoSpaceError && e.message.includes(`no reachable peer owns free space in ${formatCidr(a.r)}`));
  assert.deepEqual(a.ipam.status(), { status: 'no space', reason: `no reachable peer owns free space in ${formatCidr(a.r)}` });
  assert.equal(a.ipam.pendingAllocations, 0, 'nothing left waiting');
});

test('a donor refuses with a reason: no ring here, or no free space', async () => {
  const net = new FakeNet();
  net.hold = true;
  net.node(B); // the requester, as a bare mesh endpoint
  const o = small(net, C, { mode: 'observer' }, '10.0.0.0/29');
  const a = small(net, A, { mode: 'seed', names: [A, C] }, '10.0.0.0/29');
  // asked for space in a subnet it owns nothing of
  const notMine = formatCidr(a.ipam.ring.ownedBy(C)[0]!);
  o.mesh.handlers.get(REQUEST_TYPE)!(B, { id: `q-${C}`, subnet: '10.0.0.0/29' });
  a.mesh.handlers.get(REQUEST_TYPE)!(B, { id: `q-${A}`, subnet: notMine });
  const until = Date.now() + 5000;
  while (net.queue.filter((s) => s.type === REPLY_TYPE).length < 2 && Date.now() < until) await new Promise((r) => setImmediate(r));
  const replies = Object.fromEntries(net.queue.filter((s) => s.type === REPLY_TYPE).map((s) => [s.from, s.body]));
  assert.deepEqual(replies[C], { id: `q-${C}`, ok: false, reason: 'ring not initialised here' });
  assert.deepEqual(replies[A], { id: `q-${A}`, ok: false, reason: 'no free space' });
  assert.equal(a.disk.commits, 0, 'a refusal persists nothing');
});

test('an exact address owned by another peer is refused, naming the owner; one of ours is given', async () => {
  const net = new FakeNet();
  const a = small(net, A, { mode: 'seed', names: [A, B] }, '10.0.0.0/28');
  small(net, B, { mode: 'seed', names: [A, B] }, '10.0.0.0/28');
  const mine = a.ipam.ring.ownedBy(A)[0]!;
  const theirs = a.ipam.ring.ownedBy(B)[0]!;
  await assert.rejects(a.ipam.allocate(key('t'), a.r, theirs.base + 2, { bridge: 'weave' }), (e: Error) => e instanceof AddressInUseError && e.message.includes(`owned by peer ${B}`));
  const rec = await a.ipam.allocate(key('m'), a.r, mine.base + 2, { bridge: 'weave' });
  assert.ok(rec.address.startsWith(formatIPv4(mine.base + 2) + '/'));
});

test('load: a snapshot brings back the ring and the allocations; a broken ring is refused by name', async () => {
  const net = new FakeNet();
  const a = small(net, A, { mode: 'seed', names: [A, B] }, '10.0.0.0/28');
  const rec = await a.ipam.allocate(key('k'), a.r, undefined, { bridge: 'weave' });
  const snap = a.ipam.snapshot();
  const b = small(new FakeNet(), A, { mode: 'observer' }, '10.0.0.0/28');
  let changes = 0;
  b.ipam.on('change', () => changes++);
  b.ipam.load(structuredClone(snap));
  assert.ok(changes > 0);
  assert.deepEqual(owners(b.ipam), owners(a.ipam));
  assert.deepEqual(b.ipam.ring.ownedBy(A).map(formatCidr), a.ipam.ring.ownedBy(A).map(formatCidr));
  assert.deepEqual(b.ipam.allocator.list(), a.ipam.allocator.list(), 'the allocations came back');
  assert.equal((await b.ipam.allocate(key('k'), b.r, undefined, { bridge: 'weave' })).address, rec.address);
  const c = small(new FakeNet(), A, { mode: 'observer' }, '10.0.0.0/28');
  c.ipam.load({ ...structuredClone(snap), ring: undefined as unknown as RingData, paxos: undefined as unknown as IpamFile['paxos'] });
  assert.equal(c.ipam.ring.initialised(), false);
});

test('a peer with another ring is refused, and readiness says ring conflict, naming the peer', async () => {
  const net = new FakeNet();
  const a = small(net, A, { mode: 'seed', names: [A, B] }, '10.0.0.0/28');
  const c = small(net, C, { mode: 'seed', names: [C] }, '10.0.0.0/28');
  const before = owners(c.ipam);
  c.mesh.syncFrom(a.mesh);
  const s = c.ipam.status();
  assert.equal(s.status, 'ring conflict');
  assert.ok(s.reason?.includes(`peer ${A}`));
  assert.deepEqual(owners(c.ipam), before, 'its own ring is kept');
});

/** A service with every option a test may need, a recording logger and a "disk" that can fail. */
function peer(
  net: FakeNet,
  name: string,
  init: IpamInit,
  cidr: string,
  o: { defaultSubnet?: string; spaceTimeoutMs?: number } = {},
) {
  const mesh = net.node(name);
  const r = parseCidr(cidr)!;
  const { log: rlog, find, records } = recordingLogger();
  const disk: { data?: IpamFile; commits: number; fail?: Error } = { commits: 0 };
  let ipam: IpamService;
  const commit = async () => {
    if (disk.fail) throw disk.fail;
    disk.commits++;
    disk.data = structuredClone(ipam.snapshot());
  };
  const defaultSubnet = o.defaultSubnet ? parseCidr(o.defaultSubnet)! : r;
  ipam = new IpamService({ self: name, mesh, log: rlog, commit }, { range: r, defaultSubnet, init, spaceTimeoutMs: o.spaceTimeoutMs ?? 150, freeEveryMs: 60_000 });
  return { ipam, mesh, disk, r, find, records, defaultSubnet };
}

/** Uses up every free address this peer owns in `subnet`, without asking anyone. */
function exhaust(ipam: IpamService, subnet: Cidr, tag: string): number {
  let n = 0;
  while (ipam.allocator.freeCount(subnet) > 0) ipam.allocator.allocate(key(`${tag}${n++}`), subnet, undefined, { bridge: 'weave' });
  return n;
}

const settle = () => new Promise((r) => setImmediate(r));
const addrOf = (rec: { address: string }) => parseAddrWithPrefix(rec.address)!.addr;

test('intersectCidrs: the part of each owned block inside the subnet, nothing of a block outside it', () => {
  const c = (s: string) => parseCidr(s)!;
  const subnet = c('10.0.0.0/24');
  assert.deepEqual(intersectCidrs([c('10.0.0.64/26'), c('10.0.1.0/26')], subnet).map(formatCidr), ['10.0.0.64/26'], 'inside is kept, outside dropped');
  assert.deepEqual(intersectCidrs([c('10.0.0.0/16')], subnet).map(formatCidr), ['10.0.0.0/24'], 'a block around the subnet gives the subnet');
  assert.deepEqual(intersectCidrs([c('10.1.0.0/16')], subnet), []);
});

test('donation: nothing when nothing is free, a lone free address whole, more than half of the space halved', () => {
  const c = (s: string) => parseCidr(s)!;
  assert.equal(donation([], []), undefined);
  const one = c('10.0.0.7/32');
  assert.deepEqual(donation([one], []), one, 'a single address is given as it is');
  // a /28 with its first address used: the largest free block is the upper /29, half of the space: given whole
  const mine = [c('10.0.0.0/28')];
  assert.equal(formatCidr(donation(mine, [mine[0]!.base])!), '10.0.0.8/29');
  // nothing used: the whole /28 is more than half, so its upper half goes
  assert.equal(formatCidr(donation(mine, [])!), '10.0.0.8/29');
});

test('donation: never a block without an address the requester could hand out (broadcast, network, x.y.z.0)', () => {
  const c = (s: string) => parseCidr(s)!;
  const in28 = (a: number) => allocatable(c('10.0.0.0/28'), a);
  // the top /31 of the subnet, both free: halved, and the half that goes is the usable one
  assert.equal(formatCidr(donation([c('10.0.0.14/31')], [])!), '10.0.0.15/32', 'without a test of use, the upper half');
  assert.equal(formatCidr(donation([c('10.0.0.14/31')], [], in28)!), '10.0.0.14/32');
  // the bottom /31: the network address is the lower half, the upper goes as before
  assert.equal(formatCidr(donation([c('10.0.0.0/31')], [], in28)!), '10.0.0.1/32');
  // everything used but the broadcast address: nothing to give
  const top = c('10.0.0.8/29');
  const allButLast = Array.from({ length: 7 }, (_, i) => top.base + i);
  assert.equal(formatCidr(donation([top], allButLast)!), '10.0.0.15/32', 'without a test of use, the broadcast');
  assert.equal(donation([top], allButLast, in28), undefined);
  // an x.y.z.0 address in a subnet larger than /24 is passed over for the next free one
  const in16 = (a: number) => allocatable(c('10.0.0.0/16'), a);
  assert.equal(formatCidr(donation([c('10.0.1.0/32'), c('10.0.1.9/32')], [], in16)!), '10.0.1.9/32');
  assert.equal(donation([c('10.0.1.0/32'), c('10.0.0.0/32')], [], in16), undefined);
});

test("a donor whose only free address is the subnet's broadcast refuses, and gives it to nobody", async () => {
  const net = new FakeNet();
  const seed: IpamInit = { mode: 'seed', names: [A, B] };
  const a = small(net, A, seed, '10.0.0.0/28', 100);
  const b = small(net, B, seed, '10.0.0.0/28', 100);
  const [donor, asker] = a.ipam.ring.ownedBy(A).some((x) => lastOf(x) === lastOf(a.r)) ? [a, b] : [b, a];
  // each uses up its own space, without asking the other
  for (const [n, tag] of [[donor, 'd'], [asker, 'r']] as const) {
    for (let i = 0; n.ipam.allocator.freeCount() > 0; i++) n.ipam.allocator.allocate(key(`${tag}${i}`), n.r, undefined, { bridge: 'weave' });
  }
  const before = owners(donor.ipam);
  const replies: unknown[] = [];
  const handlers = net.nodes.get(asker.ipam === a.ipam ? A : B)!.handlers;
  const onReply = handlers.get(REPLY_TYPE)!;
  handlers.set(REPLY_TYPE, (from, body) => (replies.push(body), onReply(from, body)));
  await assert.rejects(asker.ipam.allocate(key('late'), asker.r, undefined, { bridge: 'weave' }), NoSpaceError);
  assert.ok(replies.length > 0 && replies.every((r) => (r as SpaceReply).ok === false && (r as { reason: string }).reason === 'no free space'), JSON.stringify(replies));
  assert.deepEqual(owners(donor.ipam), before, 'the broadcast address stayed where it was');
});

test('the mesh channels IPAM gossips on are named ring, paxos and ipam-free', () => {
  const net = new FakeNet();
  const a = peer(net, A, { mode: 'observer' }, '10.0.0.0/28');
  assert.deepEqual([...a.mesh.channels.keys()].sort(), ['ipam-free', 'paxos', 'ring']);
});

test('an observer never proposes a ring, even settled and alone; it takes the decided one from the Paxos entries', async () => {
  const net = new FakeNet();
  const o = peer(net, C, { mode: 'observer' }, '10.0.0.0/28');
  await o.ipam.start();
  o.ipam.step();
  await settle();
  assert.equal(o.ipam.ring.initialised(), false);
  const entry = o.ipam.consensus.entries.get(C)!;
  assert.equal(entry.observer, true);
  assert.equal(entry.proposal ?? entry.accepted ?? entry.promised, undefined);
  // two participants agree; the observer hears their Paxos entries but not the ring channel
  o.mesh.channels.delete('ring');
  const a = peer(net, A, { mode: 'consensus', size: 2 }, '10.0.0.0/28');
  const b = peer(net, B, { mode: 'consensus', size: 2 }, '10.0.0.0/28');
  await a.ipam.start();
  await b.ipam.start();
  for (let i = 0; i < 20 && !o.ipam.ring.initialised(); i++) await settle();
  assert.deepEqual(owners(o.ipam), { [A]: 8, [B]: 8 }, 'the observer built the decided ring itself');
  assert.deepEqual(owners(a.ipam), owners(o.ipam));
});

test('two participants agree by gossip alone: one step starts it, merges of news step again, both persist the ring', async () => {
  const net = new FakeNet();
  const a = peer(net, A, { mode: 'consensus', size: 2 }, '10.0.0.0/28');
  const b = peer(net, B, { mode: 'consensus', size: 2 }, '10.0.0.0/28');
  // a probe peer that only listens to the ring channel
  const probe = net.node(C);
  const heard = new Ring(parseCidr('10.0.0.0/28')!);
  probe.channel('ring', { full: () => ({}), merge: (d) => heard.merge(d as RingData) });
  a.ipam.step();
  for (let i = 0; i < 20 && !(a.ipam.ring.initialised() && b.ipam.ring.initialised()); i++) await settle();
  assert.deepEqual(owners(a.ipam), { [A]: 8, [B]: 8 });
  assert.deepEqual(owners(b.ipam), owners(a.ipam));
  assert.deepEqual(Object.fromEntries(heard.sizes()), owners(a.ipam), 'the ring was gossiped on its channel');
  const told = [...a.find('IPAM ring initialised by consensus'), ...b.find('IPAM ring initialised by consensus')];
  assert.ok(told.length > 0);
  for (const r of told) assert.deepEqual([r.level, r.fields], ['info', { owners: [A, B] }]);
  for (const p of [a, b]) {
    await settle();
    assert.deepEqual(p.disk.data!.ring, p.ipam.ring.toData(), 'the decided ring is on disk');
  }
});

test('the lowest-named reachable participant proposes: not while a lower one is reachable, at once when it is cut off', async () => {
  const net = new FakeNet();
  net.node(A); // a participant that has published its entry and then says nothing
  const b = peer(net, B, { mode: 'consensus', size: 3 }, '10.0.0.0/28');
  const entryOfA = new Consensus(A, 3, false).entries;
  b.mesh.channels.get('paxos')!.merge({ [A]: entryOfA.set(A, { size: 3 }) } as MapData<PaxosEntry>, A);
  await settle();
  assert.equal(b.ipam.consensus.entries.get(B)?.proposal, undefined, 'A is lower and reachable: B waits');
  assert.deepEqual(b.ipam.status(), { status: 'awaiting consensus', reason: 'quorum 2, 2 known' });
  assert.equal(b.disk.commits, 1, "B's own entry was persisted");
  net.changed();
  assert.equal(b.disk.commits, 1, 'a step that changes nothing persists nothing');
  net.cut.add(`${A}|${B}`);
  net.changed();
  assert.deepEqual(b.ipam.consensus.entries.get(B)?.proposal, [1, B]);
  assert.deepEqual(b.ipam.status(), { status: 'awaiting consensus', reason: 'quorum 2, 1 known' });
  await settle();
  assert.equal(b.disk.commits, 2, 'the proposal was persisted');
  // a failed write of consensus state is logged, not thrown
  b.disk.fail = new Error('disk full');
  net.cut.clear();
  b.mesh.channels.get('paxos')!.merge({ [A]: entryOfA.set(A, { size: 3, proposal: [5, A] }) } as MapData<PaxosEntry>, A);
  await settle();
  await settle();
  assert.deepEqual(b.find('persisting consensus state failed').map((r) => [r.level, r.fields]), [['error', { err: 'disk full' }]]);
});

test('a router not yet settled steps consensus as soon as the mesh says something changed', async () => {
  const net = new FakeNet();
  const a = peer(net, A, { mode: 'consensus', size: 1 }, '10.0.0.0/28');
  a.mesh.settledNow = false;
  a.mesh.waitingFor = ['h2:6783', 'h3:6783'];
  await a.ipam.start();
  assert.equal(a.ipam.ring.initialised(), false);
  assert.deepEqual(a.ipam.status(), { status: 'awaiting consensus', reason: 'waiting to hear from h2:6783, h3:6783' });
  a.disk.fail = new Error('disk full');
  a.mesh.settledNow = true;
  net.changed();
  assert.deepEqual(owners(a.ipam), { [A]: 16 });
  await settle();
  assert.deepEqual(a.find('persisting the ring failed').map((r) => [r.level, r.fields]), [['error', { err: 'disk full' }]]);
});

test('a ring heard from a peer is persisted once; a failed write is logged, the ring kept', async () => {
  const net = new FakeNet();
  const a = peer(net, A, { mode: 'seed', names: [A, B] }, '10.0.0.0/28');
  const b = peer(net, B, { mode: 'observer' }, '10.0.0.0/28');
  b.mesh.syncFrom(a.mesh);
  await settle();
  assert.equal(b.disk.commits, 1);
  assert.deepEqual(b.disk.data!.ring, a.ipam.ring.toData());
  b.mesh.syncFrom(a.mesh);
  await settle();
  assert.equal(b.disk.commits, 1, 'nothing new, nothing written');
  const c = peer(net, C, { mode: 'observer' }, '10.0.0.0/28');
  c.disk.fail = new Error('read-only file system');
  c.mesh.syncFrom(a.mesh);
  await settle();
  assert.deepEqual(owners(c.ipam), owners(a.ipam));
  assert.deepEqual(c.find('persisting the ring failed').map((r) => [r.level, r.fields]), [['error', { err: 'read-only file system' }]]);
});

test('a ring conflict is logged once per peer and cause; a malformed ring is an error, not a conflict', () => {
  const net = new FakeNet();
  const a = peer(net, A, { mode: 'seed', names: [A, B] }, '10.0.0.0/28');
  const c = peer(net, C, { mode: 'seed', names: [C] }, '10.0.0.0/28');
  c.mesh.syncFrom(a.mesh);
  assert.equal(c.find('refusing the IPAM ring of a peer').length, 1, 'logged at the first refusal');
  c.mesh.syncFrom(a.mesh);
  c.mesh.syncFrom(a.mesh);
  const logged = c.find('refusing the IPAM ring of a peer');
  assert.equal(logged.length, 1, 'and not again for the same cause');
  assert.equal(logged[0]!.level, 'error');
  assert.equal(logged[0]!.fields.peer, A);
  assert.match(String(logged[0]!.fields.err), /seeded by different peers/);
  assert.equal(c.ipam.status().reason, `${logged[0]!.fields.err}; peer ${A}`);
  const o = peer(net, B, { mode: 'observer' }, '10.0.0.0/28');
  const ring = o.mesh.channels.get('ring')!;
  assert.throws(() => ring.merge({ epoch: { epoch: 'e1', v: 1 }, 't:167772160': null } as unknown as MapData<unknown>, A), TypeError);
  assert.notEqual(o.ipam.status().status, 'ring conflict');
});

test('load: a ring of another seeding is refused by name; the Paxos state comes back', () => {
  const net = new FakeNet();
  const a = peer(net, A, { mode: 'consensus', size: 3 }, '10.0.0.0/28');
  a.ipam.step();
  const snap = a.ipam.snapshot();
  assert.ok(snap.paxos[A], 'the proposer has an entry to keep');
  const b = peer(new FakeNet(), A, { mode: 'consensus', size: 3 }, '10.0.0.0/28');
  b.ipam.load(structuredClone(snap));
  assert.deepEqual(b.ipam.snapshot().paxos, snap.paxos);
  const other = peer(new FakeNet(), A, { mode: 'seed', names: [A, C] }, '10.0.0.0/28');
  const seeded = peer(new FakeNet(), A, { mode: 'seed', names: [A, B] }, '10.0.0.0/28');
  assert.throws(() => seeded.ipam.load(other.ipam.snapshot()), /^Error: the ring in the state file is unusable: IP allocation was seeded by different peers/);
});

test('a gift: the donor stops using the block at once, a third peer hears of it, both sides log it', async () => {
  const net = new FakeNet();
  const a = peer(net, A, { mode: 'seed', names: [A] }, '10.0.0.0/28');
  const b = peer(net, B, { mode: 'observer' }, '10.0.0.0/28');
  const c = peer(net, C, { mode: 'observer' }, '10.0.0.0/28');
  b.mesh.syncFrom(a.mesh);
  c.mesh.syncFrom(a.mesh);
  const rec = await b.ipam.allocate(key('b1'), b.r, undefined, { bridge: 'weave' });
  const given = b.ipam.ring.ownedBy(B).map(formatCidr);
  assert.deepEqual(given, ['10.0.0.8/29']);
  assert.ok(rec.address.startsWith('10.0.0.8/'));
  assert.deepEqual(c.ipam.ring.ownedBy(B).map(formatCidr), given, 'the third peer knows who owns the block');
  assert.deepEqual(a.find('gave address space').map((r) => [r.level, r.fields]), [['info', { to: B, block: '10.0.0.8/29' }]]);
  assert.deepEqual(b.find('received address space').map((r) => [r.level, r.fields]), [['info', { donor: A, block: '10.0.0.8/29' }]]);
  // the donor fills what it kept, and nothing of the block it gave
  assert.equal(exhaust(a.ipam, a.r, 'a'), 7);
  for (const x of a.ipam.allocator.list()) assert.equal(a.ipam.ring.ownerOf(addrOf(x)), A, `${x.address} is the donor's own`);
});

test('the answer to a request brings the ring change with it: a requester that missed the gossip still gets the space', async () => {
  const net = new FakeNet();
  const a = peer(net, A, { mode: 'seed', names: [A] }, '10.0.0.0/28');
  const b = peer(net, B, { mode: 'observer' }, '10.0.0.0/28');
  b.mesh.syncFrom(a.mesh);
  b.mesh.channels.delete('ring'); // gossip no longer reaches b
  const rec = await b.ipam.allocate(key('b1'), b.r, undefined, { bridge: 'weave' });
  assert.ok(rec.address.startsWith('10.0.0.8/'));
  assert.deepEqual(b.ipam.ring.ownedBy(B).map(formatCidr), ['10.0.0.8/29']);
});

test('rmpeer: the space taken over is this host\'s to use at once, a third peer hears of it, and it is logged', async () => {
  const net = new FakeNet();
  const a = peer(net, A, { mode: 'seed', names: [A, B] }, '10.0.0.0/28');
  peer(net, B, { mode: 'seed', names: [A, B] }, '10.0.0.0/28');
  const c = peer(net, C, { mode: 'observer' }, '10.0.0.0/28');
  c.mesh.syncFrom(a.mesh);
  const before = a.ipam.freeOf(A)!;
  net.cut.add(`${A}|${B}`);
  assert.deepEqual(await a.ipam.rmpeer(B), { addresses: 8 });
  assert.equal(a.ipam.freeOf(A), a.ipam.allocator.freeCount());
  assert.ok(a.ipam.freeOf(A)! > before, `free after ${a.ipam.freeOf(A)} > before ${before}`);
  assert.deepEqual(owners(c.ipam), { [A]: 16 });
  assert.deepEqual(a.find('took over the space of a removed peer').map((r) => [r.level, r.fields]), [['info', { peer: B, addresses: 8 }]]);
});

test('freeOf: this peer counts now, another peer is what it last published', async () => {
  const net = new FakeNet();
  const a = peer(net, A, { mode: 'seed', names: [A, B] }, '10.0.0.0/28');
  const b = peer(net, B, { mode: 'seed', names: [A, B] }, '10.0.0.0/28');
  assert.equal(a.ipam.freeOf(B), undefined, 'B has published nothing yet');
  await b.ipam.allocate(key('b1'), b.r, undefined, { bridge: 'weave' });
  await b.ipam.start();
  const published = b.ipam.allocator.freeCount();
  await b.ipam.allocate(key('b2'), b.r, undefined, { bridge: 'weave' });
  assert.equal(a.ipam.freeOf(B), published);
  assert.equal(b.ipam.freeOf(B), published - 1);
  assert.equal(a.ipam.freeOf(A), a.ipam.allocator.freeCount());
  await b.ipam.stop();
});

test('exact addresses: outside the range no ring is asked; a repeated ADD keeps its address whoever owns it now', async () => {
  const net = new FakeNet();
  const a = peer(net, A, { mode: 'seed', names: [A, B] }, '10.0.0.0/28');
  peer(net, B, { mode: 'seed', names: [A, B] }, '10.0.0.0/28');
  const outside = parseCidr('10.9.0.0/24')!;
  const rec = await a.ipam.allocate(key('o'), outside, outside.base + 5, { bridge: 'weave' });
  assert.equal(rec.address, '10.9.0.5/24');
  // an allocation made before the ring changed hands, restored from disk
  const theirs = a.ipam.ring.ownedBy(B)[0]!.base + 2;
  const held = { ...key('k'), address: `${formatIPv4(theirs)}/28`, bridge: 'weave', createdAt: new Date(0).toISOString() };
  assert.ok(a.ipam.allocator.restore(held));
  const again = await a.ipam.allocate(key('k'), a.r, theirs, { bridge: 'weave' });
  assert.equal(again.address, held.address);
  await assert.rejects(a.ipam.allocate(key('k2'), a.r, theirs, { bridge: 'weave' }), new RegExp(`owned by peer ${B}`));
});

test('no space in a narrower default subnet: "no space" with the last donor\'s reason while any owner is reachable', async () => {
  // A, B, C share a /28: A .0-.3, B .4-.7, C .8-.15; pods use the /29 of A and B only
  const net = new FakeNet();
  const o = { defaultSubnet: '10.0.0.0/29' };
  const a = peer(net, A, { mode: 'seed', names: [A, B, C] }, '10.0.0.0/28', o);
  const b = peer(net, B, { mode: 'seed', names: [A, B, C] }, '10.0.0.0/28', o);
  peer(net, C, { mode: 'seed', names: [A, B, C] }, '10.0.0.0/28', o);
  exhaust(a.ipam, a.defaultSubnet, 'a');
  exhaust(b.ipam, b.defaultSubnet, 'b');
  b.ipam.allocator.allocate(key('b7'), b.r, b.r.base + 7, { bridge: 'weave' }); // the /29's broadcast address, held in the /28
  await assert.rejects(a.ipam.allocate(key('x'), a.defaultSubnet, undefined, { bridge: 'weave' }), NoSpaceError);
  assert.equal(a.disk.commits, 0, 'a refusal is not committed as a gift');
  net.cut.add(`${A}|${B}`);
  assert.deepEqual(a.ipam.status(), { status: 'no space', reason: `peer ${B}: no free space` });
  // B is back but does not answer
  net.cut.clear();
  net.hold = true;
  await assert.rejects(a.ipam.allocate(key('x'), a.defaultSubnet, undefined, { bridge: 'weave' }), NoSpaceError);
  net.cut.add(`${A}|${B}`);
  assert.deepEqual(a.ipam.status(), { status: 'no space', reason: `peer ${B} did not answer` });
  // C unreachable too: now every owner is
  net.cut.add(`${A}|${C}`);
  assert.deepEqual(a.ipam.status(), { status: 'all ranges owned by unreachable peers', reason: `owners: ${B}, ${C}` });
});

test('concurrent allocations short of space share one request; a later shortage asks again', async () => {
  const net = new FakeNet();
  const a = peer(net, A, { mode: 'seed', names: [A] }, '10.0.0.0/28');
  const b = peer(net, B, { mode: 'observer' }, '10.0.0.0/28', { spaceTimeoutMs: 2000 });
  b.mesh.syncFrom(a.mesh);
  net.hold = true;
  const p1 = b.ipam.allocate(key('b1'), b.r, undefined, { bridge: 'weave' });
  const p2 = b.ipam.allocate(key('b2'), b.r, undefined, { bridge: 'weave' });
  await settle();
  assert.equal(net.queue.filter((s) => s.type === REQUEST_TYPE).length, 1);
  assert.equal(b.ipam.pendingAllocations, 2);
  net.hold = false;
  net.deliver();
  const [r1, r2] = await Promise.all([p1, p2]);
  assert.notEqual(r1.address, r2.address);
  exhaust(b.ipam, b.r, 'x');
  const asked = a.find('gave address space').length;
  await b.ipam.allocate(key('b3'), b.r, undefined, { bridge: 'weave' });
  assert.equal(a.find('gave address space').length, asked + 1, 'a second request, answered');
});

test('a donor that refuses is passed over for the next one within the same round', async () => {
  // A .0-.3 (full), B .4-.7 (full, but its last published count says 4 free), C .8-.15 (published 2 free)
  const net = new FakeNet();
  const a = peer(net, A, { mode: 'seed', names: [A, B, C] }, '10.0.0.0/28', { spaceTimeoutMs: 2000 });
  const b = peer(net, B, { mode: 'seed', names: [A, B, C] }, '10.0.0.0/28');
  const c = peer(net, C, { mode: 'seed', names: [A, B, C] }, '10.0.0.0/28');
  exhaust(c.ipam, c.r, 'c');
  c.ipam.allocator.release(key('c0'));
  c.ipam.allocator.release(key('c1'));
  await b.ipam.start();
  await c.ipam.start();
  assert.ok(a.ipam.freeOf(B)! > a.ipam.freeOf(C)!, 'B is asked first');
  exhaust(b.ipam, b.r, 'b');
  exhaust(a.ipam, a.r, 'a');
  const rec = await a.ipam.allocate(key('x'), a.r, undefined, { bridge: 'weave' });
  assert.equal(a.ipam.ring.ownerOf(addrOf(rec)), A);
  assert.deepEqual(a.find('received address space').map((r) => r.fields.donor), [C]);
  for (const p of [b, c]) await p.ipam.stop();
});

test('readiness of a lone host: ready while it has a free address, however nobody else is there to ask', () => {
  const a = peer(new FakeNet(), A, { mode: 'seed', names: [A] }, '10.0.0.0/28');
  assert.equal(a.ipam.canAskPeers(), false);
  assert.deepEqual(a.ipam.status(), { status: 'ready' });
});

test('an exact address asked for before the ring is known is refused as owned by another peer, naming nobody', async () => {
  const o = peer(new FakeNet(), C, { mode: 'observer' }, '10.0.0.0/28');
  await assert.rejects(o.ipam.allocate(key('x'), o.r, o.r.base + 3, { bridge: 'weave' }), (e: Error) => e instanceof AddressInUseError && /owned by another peer$/.test(e.message));
});
