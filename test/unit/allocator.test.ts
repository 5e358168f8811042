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
  assert.equal(a.get(key('drop')), undefined, 'gone from the table too');
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

test('load replaces what was in memory, cursors included: round robin goes on where it stopped', () => {
  const a = mk();
  const first = a.allocate(key('c1'), range, undefined, extra).address;
  a.allocate(key('c2'), range, undefined, extra);
  const saved = JSON.parse(JSON.stringify(a.snapshot()));
  a.release(key('c2'));
  const b = mk();
  b.allocate(key('stale'), range, undefined, extra);
  b.load(saved);
  assert.deepEqual(b.list().map((r) => r.containerId).sort(), ['c1', 'c2'], 'the stale entry is gone');
  assert.deepEqual(b.snapshot().cursors, saved.cursors);
  const next = b.allocate(key('c3'), range, undefined, extra).address;
  assert.notEqual(next, first);
  assert.equal(parseAddrWithPrefix(next)!.addr, parseAddrWithPrefix(saved.allocations[1].address)!.addr + 1, 'the address after the last one handed out');
  // the loaded table is a copy: changing it later does not change what was saved
  b.release(key('c1'));
  assert.equal(saved.allocations.length, 2);
});

test('a key asked for in another subnet or at another exact address moves there; a fitting one stays', () => {
  const a = mk();
  const s1 = parseCidr('10.32.1.0/24')!;
  const s2 = parseCidr('10.32.2.0/24')!;
  const r1 = a.allocate(key('c1'), s1, undefined, extra);
  assert.equal(a.allocate(key('c1'), range, undefined, extra).address.split('/')[0], r1.address.split('/')[0], 'a larger subnet holding it: kept');
  const r2 = a.allocate(key('c1'), s2, undefined, extra);
  assert.match(r2.address, /^10\.32\.2\.\d+\/24$/);
  assert.equal(a.list().length, 1, 'the old address is released, not leaked');
  const exact = parseAddrWithPrefix('10.32.2.77/24')!.addr;
  assert.equal(a.allocate(key('c1'), s2, exact, extra).address, '10.32.2.77/24');
  assert.equal(a.allocate(key('c1'), s2, exact, { ...extra, mac: '02:00:00:00:00:01' }).mac, '02:00:00:00:00:01', 'an update of the extras');
  assert.equal(a.allocate(key('c1'), s2, exact, { bridge: 'weave', mac: undefined }).mac, '02:00:00:00:00:01', 'undefined extras do not erase');
  assert.equal(a.list().length, 1);
  // the address it left is free for others
  const back = a.allocate(key('c2'), s2, parseAddrWithPrefix(r2.address)!.addr, extra);
  assert.equal(back.address, r2.address);
});

test('subnetFor: each refusal names its field and says why', () => {
  const a = mk();
  const err = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      return e instanceof ConfigError ? [e.field, e.message] : ['not a ConfigError', String(e)];
    }
    return ['no error', ''];
  };
  assert.deepEqual(err(() => a.subnetFor({ subnet: 'x' })), ['ipam.subnet', 'ipam.subnet: "x" is not a network in CIDR notation (e.g. 10.32.1.0/24)']);
  assert.deepEqual(err(() => a.subnetFor({ subnet: '10.0.0.0/8' })), ['ipam.subnet', 'ipam.subnet: 10.0.0.0/8 overlaps the allocation range 10.32.0.0/12 without lying inside it']);
  assert.deepEqual(err(() => a.subnetFor({ address: 'x', subnet: '10.32.1.0/24' })), ['ips', 'ips: "x" is not an IPv4 address']);
  assert.deepEqual(err(() => a.subnetFor({ address: '10.0.1.1' })), ['ips', 'ips: "10.0.1.1" is not an IPv4 address with a prefix length (e.g. 10.0.1.1/24)']);
  assert.deepEqual(err(() => a.subnetFor({ address: '10.32.1.5/25', subnet: '10.32.1.0/24' })), ['ips', 'ips: 10.32.1.5/25 is not in ipam.subnet 10.32.1.0/24']);
  assert.deepEqual(err(() => a.subnetFor({ address: '10.32.1.255/24' })), ['ips', 'ips: 10.32.1.255/24 is the network or broadcast address of its subnet']);
  assert.deepEqual(err(() => a.subnetFor({ address: '10.40.0.1/8' })), ['ips', 'ips: 10.40.0.1/8: its subnet overlaps the allocation range 10.32.0.0/12 without lying inside it']);
  // a bare address outside the range needs a prefix; inside it takes the default subnet's
  assert.deepEqual(a.subnetFor({ address: '10.32.1.5', subnet: '10.32.1.0/24' }), { subnet: parseCidr('10.32.1.0/24')!, exact: parseAddrWithPrefix('10.32.1.5/24')!.addr });
  assert.deepEqual(a.subnetFor({ address: '10.0.1.1/24' }).subnet, parseCidr('10.0.1.0/24'));
});

test('/31 and /32 subnets: every address is a host address, and the free count says so', () => {
  for (const [cidr, n] of [
    ['10.32.9.0/31', 2],
    ['10.32.9.4/32', 1],
  ] as const) {
    const s = parseCidr(cidr)!;
    const a = new Allocator(range, s, { owned: () => [range] });
    assert.equal(a.freeCount(s), n, cidr);
    for (let i = 0; i < n; i++) a.allocate(key(`c${i}`), s, undefined, extra);
    assert.throws(() => a.allocate(key('over'), s, undefined, extra), NoSpaceError);
    assert.equal(a.freeCount(s), 0);
  }
  // outside the range a subnet is the user's: handed out without owning it, but only there
  const out = parseCidr('10.0.7.0/30')!;
  const a = new Allocator(range, range, { owned: () => [] });
  assert.equal(a.allocate(key('x'), out, undefined, extra).address, '10.0.7.1/30');
  assert.throws(() => a.allocate(key('y'), range, undefined, extra), /this peer owns no space in 10\.32\.0\.0\/12/);
  assert.deepEqual(a.usedIn([range]), [], 'usedIn counts only what lies in the blocks asked about');
  assert.deepEqual(a.usedIn([out]), [parseAddrWithPrefix('10.0.7.1/30')!.addr]);
});

test('the free count leaves out held addresses in space this peer no longer owns (given away, taken over)', () => {
  const low = parseCidr('10.32.0.0/13')!;
  let owned = [range];
  const a = new Allocator(range, range, { owned: () => owned });
  const inHigh = a.allocate(key('c1'), range, parseAddrWithPrefix('10.40.0.5/12')!.addr, extra);
  a.allocate(key('c2'), range, parseAddrWithPrefix('10.32.0.5/12')!.addr, extra);
  owned = [low];
  const fresh = new Allocator(range, range, { owned: () => [low] });
  assert.equal(a.freeCount(), fresh.freeCount() - 1, 'only the held address in owned space counts');
  assert.ok(inHigh);
});

test('the round-robin cursor survives a snapshot: after a reload the next address follows the last one handed out', () => {
  const a = mk();
  for (const c of ['c1', 'c2', 'c3']) a.allocate(key(c), range, undefined, extra);
  a.release(key('c3')); // the last address handed out is free again, but not next in line
  const b = mk();
  b.allocate(key('stale'), range, parseAddrWithPrefix('10.32.5.5/12')!.addr, extra);
  b.load(JSON.parse(JSON.stringify(a.snapshot())));
  assert.equal(b.freeCount(), mk().freeCount() - 2, 'only the loaded entries are held');
  assert.equal(b.allocate(key('c4'), range, undefined, extra).address, '10.32.0.4/12');
});

test('refusals say which address and why', () => {
  const s = parseCidr('10.32.0.0/29')!;
  const a = new Allocator(range, s, { owned: () => [s] });
  a.allocate(key('c1'), s, parseAddrWithPrefix('10.32.0.3/29')!.addr, extra);
  assert.throws(() => a.allocate(key('c2'), s, parseAddrWithPrefix('10.32.0.3/29')!.addr, extra), (e: unknown) => e instanceof AddressInUseError && e.message === '10.32.0.3 is already held by c1/eth0 on network n');
  assert.throws(() => a.allocate(key('c2'), range, parseAddrWithPrefix('10.40.0.3/12')!.addr, extra), (e: unknown) => e instanceof AddressInUseError && e.message === '10.40.0.3 is in the allocation range but owned by another peer');
  for (let i = 0; i < 5; i++) a.allocate(key(`f${i}`), s, undefined, extra);
  assert.throws(() => a.allocate(key('full'), s, undefined, extra), (e: unknown) => e instanceof NoSpaceError && e.message === 'no free address in 10.32.0.0/29 (6 held on this host)');
});
