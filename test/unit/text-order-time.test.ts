/** The ICU-free stand-ins for toISOString and localeCompare (src/common/time.ts, src/common/order.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { isoTime } from '../../src/common/time';
import { byText } from '../../src/common/order';

test('isoTime prints what toISOString prints, for any instant in years 0-9999', () => {
  const max = Date.UTC(9999, 11, 31, 23, 59, 59, 999);
  fc.assert(fc.property(fc.integer({ min: -62167219200000, max }), (ms) => assert.equal(isoTime(ms), new Date(ms).toISOString())), { numRuns: 2000 });
  assert.equal(isoTime(0), '1970-01-01T00:00:00.000Z');
  const before = Date.now();
  const now = Date.parse(isoTime());
  assert.ok(now >= before - 1 && now <= Date.now(), 'isoTime() is now');
});

test('byText orders by code units, consistently, whatever the locale', () => {
  assert.deepEqual(['host2', 'Host10', 'host10', 'a-b', 'ab', '10.32.0.10', '10.32.0.9'].sort(byText), ['10.32.0.10', '10.32.0.9', 'Host10', 'a-b', 'ab', 'host10', 'host2']);
  fc.assert(fc.property(fc.string(), fc.string(), (a, b) => {
    assert.equal(Math.sign(byText(a, b)), -Math.sign(byText(b, a)) || 0);
    assert.equal(byText(a, b) === 0, a === b);
  }));
});
