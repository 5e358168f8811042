import { test } from 'node:test';
import assert from 'node:assert/strict';
import { capability, parseNetConf } from '../../src/common/netconf';
import { ConfigError, DecodeError } from '../../src/common/errors';

const base = { cniVersion: '1.0.0', name: 'weftnet', type: 'weft-net' };

test('valid config parses; unknown fields are tolerated', () => {
  const c = parseNetConf(JSON.stringify({ ...base, bridge: 'weave', mtu: 1400, somethingNew: { a: 1 } }));
  assert.equal(c.bridge, 'weave');
  assert.equal(c.mtu, 1400);
});

test('non-JSON and non-object stdin are decode errors', () => {
  assert.throws(() => parseNetConf('{nope'), DecodeError);
  assert.throws(() => parseNetConf('[1,2]'), DecodeError);
  assert.throws(() => parseNetConf('null'), DecodeError);
});

test('invalid fields are config errors that name the field', () => {
  const cases: [Record<string, unknown>, string][] = [
    [{ ...base, mtu: 20 }, 'mtu'],
    [{ ...base, mtu: 'big' }, 'mtu'],
    [{ ...base, bridge: 'a bridge name too long' }, 'bridge'],
    [{ ...base, name: '-bad' }, 'name'],
    [{ ...base, hairpinMode: 'yes' }, 'hairpinMode'],
    [{ ...base, ipam: { subnet: 5 } }, 'ipam.subnet'],
    [{ ...base, args: { cni: { ips: 'x' } } }, 'args.cni.ips'],
    [{ cniVersion: '1.0.0', type: 'weft-net' }, 'name'],
  ];
  for (const [conf, field] of cases) {
    assert.throws(
      () => parseNetConf(JSON.stringify(conf)),
      (e: unknown) => e instanceof ConfigError && e.field === field && e.message.startsWith(`${field}:`),
      `expected an error naming ${field}`,
    );
  }
});

test('capability keys are matched case-insensitively', () => {
  const c = parseNetConf(JSON.stringify({ ...base, runtimeConfig: { IPs: ['10.32.0.9/12'], Mac: '02:00:00:00:00:09' } }));
  assert.deepEqual(capability(c, 'ips'), ['10.32.0.9/12']);
  assert.equal(capability(c, 'mac'), '02:00:00:00:00:09');
  assert.equal(capability(c, 'portMappings'), undefined);
});
