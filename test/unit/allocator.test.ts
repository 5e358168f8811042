import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Allocator } from '../../src/ipam/allocator';
import { parseAddrWithPrefix, parseCidr } from '../../src/common/ip';
import { AddressInUseError, ConfigError, NoSpaceError } from '../../src/common/errors';

const range = parseCidr('10.32.0.0/12')!;
const mk = (owned = [range]) => new Allocator(range, range, { owned: () => owned });
const key = (c: string, ifname = 'eth0', network = 'n') => ({ network, containerId: c, ifname });
const extra = { bridge: 'weave' };

test('allocation is idempotent per (network, container, ifname)', () => {
  const a = mk();
  const r1 = a.allocate(key('c1'), range, undefined, extra);
  const r2 = a.allocate(key('c1'), range, undefined, extra);
  assert.equal(r1.address, r2.address);
  const r3 = a.allocate(key('c1', 'eth1'), range, undefined, extra);
  assert.notEqual(r3.address, r1.address);
  const r4 = a.allocate(key('c1', 'eth0', 'other'), range, undefined, extra);
  assert.notEqual(r4.address, r1.address);
});

test('round robin: a released address is not handed out again at once', () => {
  const a = mk();
  const first = a.allocate(key('c1'), range, undefined, extra).address;
  a.release(key('c1'));
  const second = a.allocate(key('c2'), range, undefined, extra).address;
  assert.notEqual(second, first);
});

test('exhaustion is NoSpaceError; network and broadcast addresses are never handed out', () => {
  const s = parseCidr('10.32.0.0/29')!;
  const a = new Allocator(range, s, { owned: () => [s] });
  const got = [1, 2, 3, 4, 5, 6].map((i) => a.allocate(key(`c${i}`), s, undefined, extra).address);
  assert.deepEqual(got.sort(), ['10.32.0.1/29', '10.32.0.2/29', '10.32.0.3/29', '10.32.0.4/29', '10.32.0.5/29', '10.32.0.6/29']);
  assert.throws(() => a.allocate(key('c7'), s, undefined, extra), NoSpaceError);
  assert.equal(a.freeCount(s), 0);
});

test('only owned space is handed out inside the range', () => {
  const half = parseCidr('10.40.0.0/13')!;
  const a = mk([half]);
  const r = a.allocate(key('c1'), range, undefined, extra);
  assert.ok(r.address.startsWith('10.40.'), r.address);
  const exact = parseAddrWithPrefix('10.32.0.9/12')!.addr;
  assert.throws(() => a.allocate(key('c2'), range, exact, extra), AddressInUseError);
});

test('exact addresses: taken once, refused to a second holder', () => {
  const a = mk();
  const { subnet, exact } = a.subnetFor({ address: '10.0.1.1/24' });
  assert.equal(a.inRange(subnet), false);
  a.allocate(key('c1'), subnet, exact, extra);
  assert.throws(() => a.allocate(key('c2'), subnet, exact, extra), AddressInUseError);
});

test('subnetFor: checks requests against the range and names the field', () => {
  const a = mk();
  assert.equal(a.subnetFor({}).subnet.prefix, 12);
  assert.equal(a.subnetFor({ address: '10.32.5.5' }).subnet.prefix, 12);
  assert.equal(a.subnetFor({ subnet: '10.32.1.0/24' }).subnet.prefix, 24);
  assert.throws(() => a.subnetFor({ subnet: '10.0.0.0/8' }), (e: unknown) => e instanceof ConfigError && e.field === 'ipam.subnet');
  assert.throws(() => a.subnetFor({ subnet: '10.32.1.1/24' }), (e: unknown) => e instanceof ConfigError && e.field === 'ipam.subnet');
  assert.throws(() => a.subnetFor({ address: '10.0.1.1' }), /prefix length/);
  assert.throws(() => a.subnetFor({ address: '10.0.1.0/24' }), /network or broadcast/);
  assert.throws(() => a.subnetFor({ address: '10.32.2.5/24', subnet: '10.32.1.0/24' }), /not in ipam.subnet/);
});

test('gc releases what is not listed, only in the given network', () => {
  const a = mk();
  a.allocate(key('keep'), range, undefined, extra);
  a.allocate(key('drop'), range, undefined, extra);
  a.allocate(key('drop', 'eth0', 'other'), range, undefined, extra);
  const gone = a.gc('n', [{ containerId: 'keep', ifname: 'eth0' }]);
  assert.deepEqual(gone.map((r) => r.containerId), ['drop']);
  assert.ok(a.get(key('keep')));
  assert.ok(a.get(key('drop', 'eth0', 'other')));
});

test('snapshot and load restore the same table', () => {
  const a = mk();
  for (let i = 0; i < 10; i++) a.allocate(key(`c${i}`), range, undefined, extra);
  a.release(key('c3'));
  const b = mk();
  b.load(JSON.parse(JSON.stringify(a.snapshot())));
  assert.deepEqual(b.list(), a.list());
  const next = b.allocate(key('new'), range, undefined, extra);
  assert.ok(!a.list().some((r) => r.address === next.address));
});
