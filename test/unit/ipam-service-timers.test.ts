/**
 * The IPAM service against a mocked clock (node:test's mock timers: setTimeout, setInterval
 * and Date move only when a test ticks them): when free space is published, how long an
 * allocation waits and how often it looks again, how long each donor is given to answer.
 * Equivalent mutants of src/ipam/service.ts are listed at the top of ipam-service.test.ts.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '../../src/common/log';
import { parseAddrWithPrefix, parseCidr, type Cidr } from '../../src/common/ip';
import { AddressInUseError, NoSpaceError } from '../../src/common/errors';
import { IpamService, type IpamInit } from '../../src/ipam/service';
import { REQUEST_TYPE, type SpaceExchange } from '../../src/ipam/space';
import { FakeNet } from '../helpers/fake-mesh';

const log = createLogger({ name: 't', level: 'silent' });
const A = '02:00:00:00:00:0a';
const B = '02:00:00:00:00:0b';
const C = '02:00:00:00:00:0c';
const key = (id: string) => ({ network: 'n', containerId: id, ifname: 'eth0' });
const range = parseCidr('10.0.0.0/28')!;
const settle = () => new Promise((r) => setImmediate(r));

function clock(t: TestContext): (ms: number) => Promise<void> {
  t.mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'], now: 1_000_000 });
  // each tick is followed by the promise chains the timers it fired set going
  return async (ms) => {
    t.mock.timers.tick(ms);
    await settle();
  };
}

function svc(net: FakeNet, name: string, init: IpamInit, o: { spaceTimeoutMs?: number; freeEveryMs?: number } = {}) {
  const mesh = net.node(name);
  let commits = 0;
  const ipam = new IpamService({ self: name, mesh, log, commit: async () => void commits++ }, { range, defaultSubnet: range, init, ...o });
  return { ipam, mesh, commits: () => commits };
}

function exhaust(ipam: IpamService, subnet: Cidr, tag: string): void {
  let n = 0;
  while (ipam.allocator.freeCount(subnet) > 0) ipam.allocator.allocate(key(`${tag}${n++}`), subnet, undefined, { bridge: 'weave' });
}

/** A promise's state without waiting for it. */
function watch<T>(p: Promise<T>): { state: () => 'pending' | 'resolved' | 'rejected'; error: () => unknown } {
  let state: 'pending' | 'resolved' | 'rejected' = 'pending';
  let error: unknown;
  p.then(
    () => (state = 'resolved'),
    (e) => ((state = 'rejected'), (error = e)),
  );
  return { state: () => state, error: () => error };
}

test('free space is published at start, then every freeEveryMs (2 s unless told); stop ends it and abandons waiting requests', async (t) => {
  const tick = clock(t);
  const net = new FakeNet();
  const a = svc(net, A, { mode: 'seed', names: [A, B] }, { freeEveryMs: 500 });
  const b = svc(net, B, { mode: 'seed', names: [A, B] });
  await a.ipam.start();
  await b.ipam.start();
  const freeA = a.ipam.allocator.freeCount();
  const freeB = b.ipam.allocator.freeCount();
  assert.equal(b.ipam.freeOf(A), freeA, 'published at start');
  assert.equal(a.ipam.freeOf(B), freeB);
  await a.ipam.allocate(key('a1'), range, undefined, { bridge: 'weave' });
  await b.ipam.allocate(key('b1'), range, undefined, { bridge: 'weave' });
  await tick(499);
  assert.equal(b.ipam.freeOf(A), freeA);
  await tick(1);
  assert.equal(b.ipam.freeOf(A), freeA - 1, 'A publishes every 500 ms');
  await tick(1499);
  assert.equal(a.ipam.freeOf(B), freeB, 'B, at the default, not before 2 s');
  await tick(1);
  assert.equal(a.ipam.freeOf(B), freeB - 1);
  // stopped: no more publishing, and a request still waiting is let go at once
  await a.ipam.stop();
  await a.ipam.allocate(key('a2'), range, undefined, { bridge: 'weave' });
  net.hold = true;
  const ex = (a.ipam as unknown as { space: SpaceExchange }).space;
  const asked = watch(ex.request(B, range, 60_000));
  await tick(5000);
  assert.equal(b.ipam.freeOf(A), freeA - 1);
  assert.equal(asked.state(), 'pending');
  await a.ipam.stop();
  await settle();
  assert.equal(asked.state(), 'resolved');
  await b.ipam.stop();
});

test('an allocation waits 10 s for space unless told otherwise, then fails saying why', async (t) => {
  const tick = clock(t);
  const b = svc(new FakeNet(), B, { mode: 'consensus', size: 3 });
  const p = watch(b.ipam.allocate(key('x'), range, undefined, { bridge: 'weave' }));
  for (let i = 0; i < 19; i++) await tick(500);
  assert.equal(p.state(), 'pending', 'still waiting at 9.5 s');
  await tick(500);
  assert.equal(p.state(), 'rejected');
  assert.ok(p.error() instanceof NoSpaceError);
  assert.match((p.error() as Error).message, /^no address within the deadline: awaiting consensus \(quorum 2, 1 known\)$/);
  assert.equal(b.ipam.pendingAllocations, 0);
});

test('while consensus is pending an allocation steps it every 500 ms, up to its deadline exactly, and leaves no listener behind', async (t) => {
  const tick = clock(t);
  const b = svc(new FakeNet(), B, { mode: 'consensus', size: 3 }, { spaceTimeoutMs: 1700 });
  const steps = t.mock.method(b.ipam, 'step');
  const p = watch(b.ipam.allocate(key('x'), range, undefined, { bridge: 'weave' }));
  await settle();
  assert.equal(steps.mock.callCount(), 1);
  assert.equal(b.ipam.pendingAllocations, 1);
  await tick(499);
  assert.equal(steps.mock.callCount(), 1, 'no second round before 500 ms');
  await tick(1);
  assert.equal(steps.mock.callCount(), 2);
  await tick(500);
  await tick(500);
  assert.equal(steps.mock.callCount(), 4, 'rounds at 0, 500, 1000 and 1500 ms');
  await tick(199);
  assert.equal(p.state(), 'pending');
  await tick(1);
  assert.equal(p.state(), 'rejected', 'the last wait is cut to the deadline');
  assert.equal(steps.mock.callCount(), 4);
  assert.equal(b.ipam.listenerCount('change'), 0);
  assert.equal(b.ipam.pendingAllocations, 0);
});

test('a change (the ring arriving) ends the wait at once; an allocation before start steps consensus itself', async (t) => {
  const tick = clock(t);
  const net = new FakeNet();
  const a = svc(net, A, { mode: 'consensus', size: 1 });
  a.mesh.settledNow = false;
  const p = watch(a.ipam.allocate(key('x'), range, undefined, { bridge: 'weave' }));
  await settle();
  assert.equal(p.state(), 'pending');
  a.mesh.settledNow = true;
  net.changed();
  await settle();
  assert.equal(p.state(), 'resolved', 'no time passed');
  assert.equal(a.ipam.listenerCount('change'), 0);
  // never started, and the mesh never says anything changed: the allocation itself steps
  // consensus (decided at once here), and takes the space at once, not after a 500 ms round
  const c = svc(new FakeNet(), C, { mode: 'consensus', size: 1 });
  const q = watch(c.ipam.allocate(key('y'), range, undefined, { bridge: 'weave' }));
  await settle();
  assert.equal(c.ipam.ring.initialised(), true);
  assert.equal(q.state(), 'resolved', 'no time passed');
  assert.equal(c.ipam.listenerCount('change'), 0);
});

test('each donor gets at most 3 s to answer and never past the deadline; none is asked after it', async (t) => {
  const tick = clock(t);
  const net = new FakeNet();
  const seed: IpamInit = { mode: 'seed', names: [A, B, C] };
  const a = svc(net, A, seed, { spaceTimeoutMs: 4000 });
  svc(net, B, seed);
  svc(net, C, seed);
  exhaust(a.ipam, range, 'a');
  let full = '';
  assert.throws(() => a.ipam.allocator.allocate(key('probe'), range, undefined, { bridge: 'weave' }), (e: Error) => ((full = e.message), e instanceof NoSpaceError));
  net.hold = true; // B and C never answer
  const asked = () => net.queue.filter((s) => s.type === REQUEST_TYPE).map((s) => s.to);
  const p = watch(a.ipam.allocate(key('x'), range, undefined, { bridge: 'weave' }));
  await settle();
  assert.deepEqual(asked(), [B]);
  await tick(2999);
  assert.deepEqual(asked(), [B]);
  await tick(1);
  assert.deepEqual(asked(), [B, C], 'B had its 3 s');
  await tick(999);
  assert.equal(p.state(), 'pending');
  await tick(1);
  await tick(0);
  assert.equal(p.state(), 'rejected', 'C had what was left of the 4 s');
  // the owners are reachable (the host is ready), so the allocator says why there was no address
  assert.equal((p.error() as Error).message, `no address within the deadline: ${full}`);

  // a deadline that ends while B is being asked: C is not asked at all
  const net2 = new FakeNet();
  const d = svc(net2, A, seed, { spaceTimeoutMs: 2000 });
  svc(net2, B, seed);
  svc(net2, C, seed);
  exhaust(d.ipam, range, 'd');
  net2.hold = true;
  const q = watch(d.ipam.allocate(key('y'), range, undefined, { bridge: 'weave' }));
  await settle();
  await tick(2000);
  await tick(0);
  assert.equal(q.state(), 'rejected');
  assert.deepEqual(net2.queue.filter((s) => s.type === REQUEST_TYPE).map((s) => s.to), [B]);
});

test('no waiting where no peer can help: an exact address held, or a subnet outside the range that is full', async (t) => {
  clock(t);
  const net = new FakeNet();
  const a = svc(net, A, { mode: 'seed', names: [A, B] });
  svc(net, B, { mode: 'seed', names: [A, B] });
  const held = await a.ipam.allocate(key('h'), range, undefined, { bridge: 'weave' });
  const p = watch(a.ipam.allocate(key('x'), range, parseAddrWithPrefix(held.address)!.addr, { bridge: 'weave' }));
  const outside = parseCidr('10.9.0.0/30')!;
  await a.ipam.allocate(key('o1'), outside, undefined, { bridge: 'weave' });
  await a.ipam.allocate(key('o2'), outside, undefined, { bridge: 'weave' });
  const q = watch(a.ipam.allocate(key('o3'), outside, undefined, { bridge: 'weave' }));
  await settle();
  assert.equal(p.state(), 'rejected');
  assert.ok(p.error() instanceof AddressInUseError, String(p.error()));
  assert.equal(q.state(), 'rejected');
  assert.ok(q.error() instanceof NoSpaceError);
  assert.match((q.error() as Error).message, /^no free address in 10\.9\.0\.0\/30/);
  assert.equal(net.queue.length, 0);
});
