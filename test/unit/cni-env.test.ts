import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseCniArgs, parseCommand, parseEnv } from '../../src/cni/env';
import { EnvError } from '../../src/common/errors';

test('CNI_ARGS: key order free, split on the first =, empty parts skipped', () => {
  const a = parseCniArgs('K8S_POD_NAME=web;;IgnoreUnknown=1;IP=10.32.1.5/24;X=a=b;');
  assert.deepEqual(a.ips, ['10.32.1.5/24']);
  assert.equal(a.podName, 'web');
});

test('CNI_ARGS: unknown keys fail unless IgnoreUnknown is set', () => {
  assert.throws(() => parseCniArgs('FOO=bar'), (e: unknown) => e instanceof EnvError && /FOO/.test(e.message));
  assert.doesNotThrow(() => parseCniArgs('FOO=bar;IgnoreUnknown=true'));
  assert.throws(() => parseCniArgs('IgnoreUnknown=0;FOO=bar'), EnvError);
});

test('CNI_ARGS: K8S fields and MAC are read', () => {
  const a = parseCniArgs('IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_UID=u;K8S_POD_INFRA_CONTAINER_ID=c;MAC=02:00:00:00:00:01');
  assert.equal(a.podNamespace, 'ns');
  assert.equal(a.podUid, 'u');
  assert.equal(a.infraContainerId, 'c');
  assert.equal(a.mac, '02:00:00:00:00:01');
});

test('CNI_ARGS: a part without = is an error naming CNI_ARGS', () => {
  assert.throws(() => parseCniArgs('novalue'), /CNI_ARGS/);
});

test('CNI_COMMAND: unknown verb is an EnvError, absent is undefined', () => {
  assert.throws(() => parseCommand({ CNI_COMMAND: 'FOO' }), (e: unknown) => e instanceof EnvError && /CNI_COMMAND/.test(e.message));
  assert.equal(parseCommand({}), undefined);
  assert.equal(parseCommand({ CNI_COMMAND: 'GC' }), 'GC');
});

test('env: ADD needs container ID, ifname and netns, each named when missing or bad', () => {
  const ok = { CNI_CONTAINERID: 'abc', CNI_NETNS: '/var/run/netns/x', CNI_IFNAME: 'eth0' };
  assert.doesNotThrow(() => parseEnv('ADD', ok));
  for (const [k, v, re] of [
    ['CNI_CONTAINERID', '', /CNI_CONTAINERID/],
    ['CNI_CONTAINERID', '-bad', /CNI_CONTAINERID/],
    ['CNI_IFNAME', 'this-name-is-too-long', /CNI_IFNAME/],
    ['CNI_IFNAME', '..', /CNI_IFNAME/],
    ['CNI_IFNAME', 'et h0', /CNI_IFNAME/],
    ['CNI_IFNAME', 'a/b', /CNI_IFNAME/],
    ['CNI_NETNS', '', /CNI_NETNS/],
  ] as const) {
    assert.throws(() => parseEnv('ADD', { ...ok, [k]: v }), re, `${k}=${v}`);
  }
});

test('env: DEL accepts an empty netns; GC and STATUS validate no container fields', () => {
  assert.doesNotThrow(() => parseEnv('DEL', { CNI_CONTAINERID: 'abc', CNI_NETNS: '', CNI_IFNAME: 'eth0' }));
  assert.doesNotThrow(() => parseEnv('GC', { CNI_CONTAINERID: '', CNI_NETNS: '', CNI_IFNAME: '' }));
  assert.doesNotThrow(() => parseEnv('STATUS', {}));
});
