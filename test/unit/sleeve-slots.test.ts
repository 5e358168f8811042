/** The sleeve's per-peer slots and its wire format: pure, no root. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { SlotTable } from '../../src/datapath/sleeve/slots';
import { decodeHeader, decodeInner, encodeHeader, encodeInner, HEADER_BYTES, Kind, NameCodec } from '../../src/datapath/sleeve/wire';
import { parseCidr, parseIPv4 } from '../../src/common/ip';
import { MAX_COUNTER } from '../../src/crypto/aead';

const block = parseCidr('169.254.192.0/28')!; // 16 addresses: slots 2..14
const name = (i: number) => `02:00:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;

test('slots: address and port move together, inside the block, never the network, own or broadcast address', () => {
  const t = new SlotTable(block, 61000);
  assert.equal(t.capacity, 13);
  const seen = new Set<number>();
  for (let i = 0; i < t.capacity; i++) {
    const s = t.assign(name(i));
    assert.ok(s.index >= 2 && s.index <= 14, `index ${s.index}`);
    assert.equal(s.addr, `169.254.192.${s.index}`);
    assert.equal(s.port, 61000 + s.index);
    assert.ok(!seen.has(s.index), 'no two peers share a slot');
    seen.add(s.index);
  }
  assert.throws(() => t.assign(name(99)), /block full: 13 peers/);
  assert.equal(t.ownAddr, '169.254.192.1');
});

test('slots: the same peer gets the same slot in a fresh table (stable across restarts), whatever the order', () => {
  fc.assert(
    fc.property(fc.shuffledSubarray([...Array(8).keys()], { minLength: 1 }), (order) => {
      const a = new SlotTable(parseCidr('169.254.192.0/20')!, 61000);
      const b = new SlotTable(parseCidr('169.254.192.0/20')!, 61000);
      for (let i = 0; i < 8; i++) a.assign(name(i));
      for (const i of order) b.assign(name(i));
      // these 8 names hash to 8 different slots of the 4093, so no order can move one
      return order.every((i) => b.get(name(i))!.index === a.get(name(i))!.index);
    }),
  );
});

test('slots: adoption keeps a previous run\'s slot; a taken or out-of-range index is refused', () => {
  const t = new SlotTable(block, 61000);
  assert.ok(t.adopt(name(1), 9));
  assert.equal(t.assign(name(1)).index, 9, 'assign returns the adopted slot');
  assert.equal(t.adopt(name(2), 9), false, 'taken');
  assert.equal(t.adopt(name(3), 1), false, 'own address');
  assert.equal(t.adopt(name(3), 15), false, 'broadcast');
  assert.ok(t.adopt(name(3), 14));
  assert.equal(t.indexOf(parseIPv4('169.254.192.14')!), 14);
  assert.equal(t.indexOf(parseIPv4('169.254.192.15')!), undefined);
  const r = t.release(name(1))!;
  assert.equal(r.index, 9);
  assert.ok(t.adopt(name(2), 9), 'free again');
});

test('slots: a block or port base that cannot hold the ports is refused with the reason', () => {
  assert.throws(() => new SlotTable(parseCidr('169.254.192.0/20')!, 62000), /portBase: 62000: the ports 62000\+2\.\.66094/);
  assert.throws(() => new SlotTable(parseCidr('169.254.192.0/30')!, 61000), /too small/);
});

test('wire: header and inner header round-trip; foreign versions and oversized counters are refused', () => {
  const n = new NameCodec();
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 0xffff_ffff }), fc.integer({ min: 0, max: MAX_COUNTER }), fc.boolean(), (keyId, counter, sealed) => {
      const h = encodeHeader(n, '02:aa:bb:cc:dd:ee', sealed, keyId, counter);
      const d = Buffer.concat([h, encodeInner(n, { kind: Kind.ProbeReply, hops: 7, origin: '0a:00:00:00:00:01', destination: 'fe:ff:00:00:00:02' })]);
      const back = decodeHeader(n, d)!;
      const inner = decodeInner(n, d.subarray(HEADER_BYTES))!;
      return back.sender === '02:aa:bb:cc:dd:ee' && back.keyId === keyId && back.counter === counter && back.sealed === sealed && inner.kind === Kind.ProbeReply && inner.hops === 7 && inner.origin === '0a:00:00:00:00:01' && inner.destination === 'fe:ff:00:00:00:02';
    }),
  );
  const d = Buffer.concat([encodeHeader(n, '02:aa:bb:cc:dd:ee', true, 1, 1), Buffer.alloc(14)]);
  const other = Buffer.from(d);
  other[0] = 0xa2;
  assert.equal(decodeHeader(n, other), undefined, 'another version');
  const big = Buffer.from(d);
  big.writeUInt32BE(0xffff_ffff, 12);
  assert.equal(decodeHeader(n, big), undefined, 'counter beyond 2^53');
  assert.equal(decodeHeader(n, d.subarray(0, 20)), undefined, 'too short');
  assert.throws(() => n.encode('not-a-name'), /expected 6 bytes in MAC notation/);
});

test('sleeve options: bad values are refused in the constructor, naming the field, before anything is made', async () => {
  const { SleeveOverlay, MAX_INNER_MTU } = await import('../../src/datapath/sleeve/sleeve');
  const { ConfigError } = await import('../../src/common/errors');
  const { createLogger } = await import('../../src/common/log');
  const calls: string[] = [];
  // an iptables stand-in that records any use: the constructor must not touch the system
  const iptables = new Proxy({}, { get: (_t, k) => (calls.push(String(k)), () => Promise.resolve()) }) as never;
  const c = { routes: { nextHop: () => undefined, endpoint: () => undefined }, keys: { dataKeys: () => undefined }, iptables, log: createLogger({ name: 't', level: 'silent' }) };
  const base = { self: '02:00:00:00:00:01', bridge: 'weave', encrypted: true };
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ innerMtu: MAX_INNER_MTU + 1 }, /^innerMtu: /],
    [{ innerMtu: 100 }, /^innerMtu: /],
    [{ trustedSubnets: ['10.0.0.0/8', '10.1.2.3/8'] }, /^trusted-subnets: "10\.1\.2\.3\/8" is not a network/],
    [{ block: '169.254.192.7/20' }, /^block: /],
    [{ portBase: 65000 }, /^portBase: /],
    [{ localIp: '10.0.0' }, /^localIp: /],
  ];
  for (const [o, re] of bad) {
    assert.throws(() => new SleeveOverlay(c, { ...base, ...o }), (e: Error) => e instanceof ConfigError && re.test(e.message), JSON.stringify(o));
  }
  const ok = new SleeveOverlay(c, { ...base, trustedSubnets: ['10.0.0.0/8'] });
  assert.equal(ok.podMtu({ iface: 'eth0', ip: '10.0.0.1', mtu: 1500, how: 'test' }), 65000, 'any underlay: the sleeve fragments');
  assert.equal(ok.podMtu({ iface: 'eth0', ip: '10.0.0.1', mtu: 9000, how: 'test' }), 65000);
  // a hop is unsealed only when both ends are trusted: a host outside trusts no peer
  const seals = (localIp: string) => (new SleeveOverlay(c, { ...base, trustedSubnets: ['10.0.0.0/8'], localIp }) as any).relay.sealsTo('10.0.0.5') as boolean;
  assert.equal(seals('10.0.0.1'), false, 'both inside: plain');
  assert.equal(seals('192.168.1.1'), true, 'this host outside: sealed');
  assert.equal((ok as any).relay.sealsTo('192.168.1.5'), true, 'the peer outside: sealed');
  assert.deepEqual(calls, [], 'the constructor touched nothing');
});
