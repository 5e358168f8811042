import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { contains, formatIPv4, isHostAddress, networkOf, parseAddrWithPrefix, parseCidr, parseIPv4, randomMac, isMac } from '../../src/common/ip';

test('parse and format round-trip for every address', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 2 ** 32 - 1 }), (n) => parseIPv4(formatIPv4(n)) === n),
  );
});

test('networkOf clears host bits; the result contains the address', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.integer({ min: 0, max: 32 }), (a, p) => {
      const base = networkOf(a, p);
      return contains({ base, prefix: p }, a) && networkOf(base, p) === base;
    }),
  );
});

test('CIDR parsing is strict about alignment and syntax', () => {
  assert.deepEqual(parseCidr('10.32.0.0/12'), { base: parseIPv4('10.32.0.0'), prefix: 12 });
  assert.equal(parseCidr('10.32.0.1/12'), undefined);
  assert.equal(parseCidr('10.32.0.0/33'), undefined);
  assert.equal(parseCidr('10.32.0.0'), undefined);
  assert.equal(parseCidr('300.0.0.0/8'), undefined);
});

test('address with prefix: explicit, defaulted, or rejected', () => {
  assert.deepEqual(parseAddrWithPrefix('10.0.1.1/24'), { addr: parseIPv4('10.0.1.1'), prefix: 24 });
  assert.deepEqual(parseAddrWithPrefix('10.0.1.1', 12), { addr: parseIPv4('10.0.1.1'), prefix: 12 });
  assert.equal(parseAddrWithPrefix('10.0.1.1'), undefined);
  assert.equal(parseAddrWithPrefix('10.0.1/24'), undefined);
});

test('network and broadcast addresses are not host addresses, except in /31 and /32', () => {
  const c = parseCidr('10.0.1.0/24')!;
  assert.equal(isHostAddress(c, parseIPv4('10.0.1.0')!), false);
  assert.equal(isHostAddress(c, parseIPv4('10.0.1.255')!), false);
  assert.equal(isHostAddress(c, parseIPv4('10.0.1.1')!), true);
  assert.equal(isHostAddress(parseCidr('10.0.1.0/31')!, parseIPv4('10.0.1.0')!), true);
});

test('random MACs are locally administered unicast', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 6, maxLength: 6 }), (b) => {
      const m = randomMac(b);
      const first = parseInt(m.slice(0, 2), 16);
      return isMac(m) && (first & 1) === 0 && (first & 2) === 2;
    }),
  );
});
