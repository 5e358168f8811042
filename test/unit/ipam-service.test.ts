/**
 * The IPAM service and its API against an in-memory mesh and store: no sockets, no root.
 * Equivalent mutants (src/ipam/service.ts), no observable behaviour changes:
 * - 153 `this.freeTimer.unref()` removed, 288 `t.unref()` removed: only whether a timer keeps the process alive.
 * - 283 `clearTimeout(t)` removed: the timer then calls `done` again, whose `off` and `resolve` are no-ops.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '../../src/common/log';
import { formatCidr, formatIPv4, parseCidr, type Cidr } from '../../src/common/ip';
import { AddressInUseError, NoSpaceError } from '../../src/common/errors';
import type { RingData } from '../../src/ipam/ring';
import { IpamService, type IpamFile, type IpamInit } from '../../src/ipam/service';
import { REPLY_TYPE, REQUEST_TYPE, SpaceExchange, type SpaceReply } from '../../src/ipam/space';
import { GATEWAY_NETWORK } from '../../src/ipam/allocator';
import { IpamApi } from '../../src/router/ipam-api';
import { ApiServer } from '../../src/router/http';
import { gatewayKey } from '../../src/datapath/bridge-addrs';
import { FakeNet, type FakeMesh } from '../helpers/fake-mesh';

const log = createLogger({ name: 't', level: 'silent' });
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
  await new Promise((r) => setTimeout(r, 20));
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
  await new Promise((res) => setTimeout(res, 20));
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
  await new Promise((r) => setTimeout(r, 10));
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
