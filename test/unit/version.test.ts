import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compareVersions, convertResult, requireVersion, type CniResult } from '../../src/cni/version';
import { VersionError } from '../../src/common/errors';

const result: CniResult = {
  cniVersion: '1.1.0',
  interfaces: [
    { name: 'weave', mac: '02:00:00:00:00:01' },
    { name: 'vethwe123', mac: '02:00:00:00:00:02' },
    { name: 'eth0', mac: '02:00:00:00:00:03', mtu: 1450, sandbox: '/var/run/netns/p' },
  ],
  ips: [{ address: '10.32.0.2/12', gateway: '10.32.0.1', interface: 2 }],
  routes: [{ dst: '0.0.0.0/0', gw: '10.32.0.1' }],
  dns: {},
};

test('versions compare numerically', () => {
  assert.equal(compareVersions('0.4.0', '1.0.0'), -1);
  assert.equal(compareVersions('1.1.0', '1.0.0'), 1);
  assert.equal(compareVersions('0.3.1', '0.3.1'), 0);
  assert.equal(compareVersions('0.10.0', '0.9.0'), 1);
});

test('1.x results keep their shape, with the config version', () => {
  const r = convertResult(result, '1.0.0');
  assert.equal(r.cniVersion, '1.0.0');
  assert.equal(r.interfaces[2]!.mtu, 1450);
  assert.equal(r.ips[0]!.version, undefined);
});

test('0.4.0 and 0.3.x results get ips[].version and lose interface mtu', () => {
  for (const v of ['0.4.0', '0.3.1', '0.3.0']) {
    const r = convertResult(result, v);
    assert.equal(r.cniVersion, v);
    assert.equal(r.ips[0]!.version, '4');
    assert.equal(r.ips[0]!.interface, 2);
    assert.equal('mtu' in r.interfaces[2]!, false);
    assert.equal(r.interfaces[2]!.sandbox, '/var/run/netns/p');
  }
});

test('requireVersion: unsupported versions and verbs too new for the config are code-1 errors', () => {
  assert.throws(() => requireVersion('0.2.0', 'ADD'), VersionError);
  assert.throws(() => requireVersion('0.3.1', 'CHECK', '0.4.0'), VersionError);
  assert.throws(() => requireVersion('1.0.0', 'GC', '1.1.0'), VersionError);
  assert.doesNotThrow(() => requireVersion('1.1.0', 'STATUS', '1.1.0'));
});
