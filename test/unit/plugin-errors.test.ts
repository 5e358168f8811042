/** The plugin's boundary without root: error codes, JSON on stdout, nothing else there. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runPlugin } from '../../src/cni/main';

async function call(env: Record<string, string>, stdin: string) {
  let out = '';
  let err = '';
  const code = await runPlugin({ env, readStdin: () => stdin, stdout: (s) => (out += s), stderr: (s) => (err += s) });
  return { code, out: out ? JSON.parse(out) : undefined, err };
}

const conf = { cniVersion: '1.0.0', name: 'weftnet', type: 'weft-net', socket: '/nonexistent/weft.sock' };
// a namespace that exists (this process's own), so the errors tested are the ones named
const addEnv = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_NETNS: '/proc/self/ns/net', CNI_IFNAME: 'eth0' };

test('VERSION prints the supported versions and ignores stdin', async () => {
  const r = await call({ CNI_COMMAND: 'VERSION' }, 'not json');
  assert.equal(r.code, 0);
  assert.equal(r.out.cniVersion, '1.1.0');
  assert.deepEqual(r.out.supportedVersions, ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
});

test('no CNI_COMMAND: name and versions on stderr, exit 0, stdout empty', async () => {
  const r = await call({}, '');
  assert.equal(r.code, 0);
  assert.equal(r.out, undefined);
  assert.match(r.err, /weft-net.*1\.1\.0/);
});

test('bad stdin is code 6, bad env code 4, bad field code 7 naming the field', async () => {
  assert.equal((await call(addEnv, '{oops')).out.code, 6);
  const env = await call({ ...addEnv, CNI_IFNAME: 'way-too-long-ifname' }, JSON.stringify(conf));
  assert.equal(env.out.code, 4);
  assert.match(env.out.msg, /CNI_IFNAME/);
  const field = await call(addEnv, JSON.stringify({ ...conf, mtu: 10 }));
  assert.equal(field.out.code, 7);
  assert.match(field.out.msg, /^mtu: /);
  const sub = await call(addEnv, JSON.stringify({ ...conf, ipam: { subnet: '10.32.1.1/24' } }));
  assert.equal(sub.out.code, 7);
  assert.match(sub.out.msg, /^ipam\.subnet: /);
  const ip = await call({ ...addEnv, CNI_ARGS: 'IP=10.32.0.300' }, JSON.stringify(conf));
  assert.equal(ip.out.code, 7);
  assert.match(ip.out.msg, /CNI_ARGS IP/);
  const two = await call(addEnv, JSON.stringify({ ...conf, runtimeConfig: { ips: ['10.32.0.5/12', '10.32.0.6/12'] } }));
  assert.equal(two.out.code, 2);
  assert.match(two.out.msg, /runtimeConfig\.ips/);
  const ipam = await call(addEnv, JSON.stringify({ ...conf, ipam: { type: 'host-local' } }));
  assert.equal(ipam.out.code, 2);
  assert.match(ipam.out.msg, /ipam\.type/);
});

test('ADD and CHECK with a CNI_NETNS that does not exist: code 4 naming CNI_NETNS, before the router is asked', async () => {
  const missing = '/var/run/netns/weft-no-such-ns';
  for (const verb of ['ADD', 'CHECK']) {
    const c = verb === 'CHECK' ? { ...conf, prevResult: { interfaces: [], ips: [] } } : conf;
    const r = await call({ ...addEnv, CNI_COMMAND: verb, CNI_NETNS: missing }, JSON.stringify(c));
    assert.equal(r.out.code, 4, `${verb}: ${r.out.msg}`);
    assert.match(r.out.msg, /^CNI_NETNS: \/var\/run\/netns\/weft-no-such-ns is not a network namespace/);
  }
});

test('unknown verb is code 4; versions too old for the verb are code 1', async () => {
  assert.equal((await call({ CNI_COMMAND: 'FROB' }, '{}')).out.code, 4);
  const chk = await call({ ...addEnv, CNI_COMMAND: 'CHECK' }, JSON.stringify({ ...conf, cniVersion: '0.3.1' }));
  assert.equal(chk.out.code, 1);
  const gc = await call({ CNI_COMMAND: 'GC' }, JSON.stringify(conf));
  assert.equal(gc.out.code, 1);
  const bad = await call(addEnv, JSON.stringify({ ...conf, cniVersion: '0.2.0' }));
  assert.equal(bad.out.code, 1);
});

test('router down: ADD is code 11 at once, STATUS code 50; errors carry the config version', async () => {
  const add = await call(addEnv, JSON.stringify(conf));
  assert.equal(add.out.code, 11);
  assert.equal(add.out.cniVersion, '1.0.0');
  // "at once": the connection was refused for want of a socket, no deadline had to run out
  assert.match(add.out.msg, /unreachable: no socket \(is `weft router` running\?\)/);
  assert.doesNotMatch(add.out.msg, /did not answer/);
  const st = await call({ CNI_COMMAND: 'STATUS' }, JSON.stringify({ ...conf, cniVersion: '1.1.0' }));
  assert.equal(st.out.code, 50);
});
