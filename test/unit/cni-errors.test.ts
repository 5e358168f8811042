/**
 * The CNI error codes the README promises, from each error class and across the router API:
 * a stand-in router on a unix socket answers the plugin's requests with the wire form of an
 * error, and the plugin must print the code the spec (or weft, for 100-103) gives it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cniCode, toCniError } from '../../src/cni/errors';
import { VERBS, type Verb } from '../../src/cni/env';
import { runPlugin } from '../../src/cni/main';
import {
  AddressInUseError,
  AddressNotFoundError,
  BadRequestError,
  CheckFailedError,
  ConfigError,
  DecodeError,
  EnvError,
  errorBody,
  errorFromBody,
  ExistsError,
  InterfaceExistsError,
  LinkNotFoundError,
  NetnsNotFoundError,
  NoSpaceError,
  RouterUnavailableError,
  SysError,
  UnsupportedFieldError,
  VersionError,
  WeftError,
} from '../../src/common/errors';

/** [error, code on ADD, code on STATUS]: the CNI spec's codes and weft's own 100-103. */
const TABLE: [unknown, number, number][] = [
  [new VersionError('v'), 1, 1],
  [new UnsupportedFieldError('f', 'm'), 2, 2],
  [new EnvError('CNI_NETNS', 'm'), 4, 4],
  [new NetnsNotFoundError('m'), 4, 4],
  [new DecodeError('m'), 6, 6],
  [new ConfigError('mtu', 'm'), 7, 7],
  [new BadRequestError('m'), 7, 7],
  [new NoSpaceError('m'), 11, 50],
  [new RouterUnavailableError('m'), 11, 50],
  [new AddressInUseError('m'), 101, 101],
  [new InterfaceExistsError('m'), 102, 102],
  [new CheckFailedError('m'), 103, 103],
  [new SysError('m'), 100, 100],
  [new LinkNotFoundError('m'), 100, 100],
  [new ExistsError('m'), 100, 100],
  [new AddressNotFoundError('m'), 100, 100],
  [new WeftError('m'), 100, 100],
  [new Error('m'), 100, 100],
  ['a string', 100, 100],
];

test('each error class maps to its code, for every verb (STATUS answers 50 where the others say try again later)', () => {
  for (const [err, onAdd, onStatus] of TABLE) {
    for (const verb of [...VERBS, undefined] as (Verb | undefined)[]) {
      const want = verb === 'STATUS' ? onStatus : onAdd;
      assert.equal(cniCode(err, verb), want, `${(err as Error).constructor?.name ?? typeof err} on ${verb}`);
    }
  }
});

test('the code survives the trip over the router API: the class is rebuilt from its wire form', () => {
  for (const [err, onAdd] of TABLE) {
    // UnsupportedFieldError is raised in the plugin only and has no wire form (errors.ts byKind)
    if (!(err instanceof WeftError) || err instanceof UnsupportedFieldError) continue;
    const back = errorFromBody(JSON.parse(JSON.stringify(errorBody(err))));
    assert.equal(cniCode(back, 'ADD'), onAdd, err.constructor.name);
    assert.equal(back.message, err.message);
  }
  // an unknown kind from a newer router is an internal error, not a crash
  assert.equal(cniCode(errorFromBody({ error: { kind: 'from-the-future', message: 'x' } }), 'ADD'), 100);
});

test('toCniError carries the config version, the message, and details only when there are some', () => {
  const e = toCniError(new SysError('ip failed', 'RTNETLINK answers: no\n'), 'ADD', '0.4.0');
  assert.deepEqual(e, { cniVersion: '0.4.0', code: 100, msg: 'ip failed', details: 'RTNETLINK answers: no' });
  assert.deepEqual(toCniError(new NoSpaceError('full'), 'ADD', '1.0.0'), { cniVersion: '1.0.0', code: 11, msg: 'full' });
  assert.deepEqual(toCniError('odd', undefined, '1.1.0'), { cniVersion: '1.1.0', code: 100, msg: 'odd' });
});

/** A stand-in router: answers every request with `answer(path)` as the real one would. */
async function fakeRouter(t: { after(fn: () => unknown): void }, answer: (path: string) => { status: number; body: unknown }) {
  const dir = mkdtempSync(join(tmpdir(), 'weft-fake-router-'));
  const socket = join(dir, 'weft.sock');
  const server: Server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const a = answer(req.url ?? '');
      res.writeHead(a.status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(a.body));
    });
  });
  await new Promise<void>((r) => server.listen(socket, r));
  t.after(async () => {
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });
  return socket;
}

async function plugin(env: Record<string, string>, conf: unknown) {
  let out = '';
  const code = await runPlugin({ env, readStdin: () => JSON.stringify({ logLevel: 'silent', ...(conf as object) }), stdout: (s) => (out += s), stderr: () => undefined });
  return { code, json: JSON.parse(out) as { code: number; msg: string; cniVersion: string } };
}

const addEnv = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'c1', CNI_NETNS: '/proc/self/ns/net', CNI_IFNAME: 'eth0' };

for (const [err, code] of [
  [new AddressInUseError('10.32.7.7 is already held by c0/eth0 on network n'), 101],
  [new NoSpaceError('no address within the deadline: awaiting consensus (quorum 2, 1 known)'), 11],
  [new ConfigError('ipam.subnet', '10.0.0.0/8 overlaps the allocation range'), 7],
  [new SysError('ip link add failed'), 100],
] as [WeftError, number][]) {
  test(`ADD: the router refusing with ${err.constructor.name} is code ${code}, its message kept, nothing created`, async (t) => {
    const asked: string[] = [];
    const socket = await fakeRouter(t, (path) => {
      asked.push(path);
      return { status: 409, body: errorBody(err) };
    });
    const r = await plugin(addEnv, { cniVersion: '0.4.0', name: 'n', type: 'weft-net', socket });
    assert.equal(r.code, 1);
    assert.equal(r.json.code, code);
    assert.equal(r.json.msg, err.message);
    assert.equal(r.json.cniVersion, '0.4.0');
    assert.deepEqual(asked, ['/v1/cni/add'], 'the plugin stopped at the refusal (one request per verb)');
  });
}

test('STATUS: a router that cannot allocate is code 50 with its reason; one that can is success', async (t) => {
  let ready = false;
  const socket = await fakeRouter(t, () => ({ status: 200, body: { ready, reason: 'ring conflict: IP allocation was seeded by different peers' } }));
  const conf = { cniVersion: '1.1.0', name: 'n', type: 'weft-net', socket };
  const no = await plugin({ CNI_COMMAND: 'STATUS' }, conf);
  assert.equal(no.json.code, 50);
  assert.match(no.json.msg, /router not ready: ring conflict/);
  ready = true;
  let out = '';
  assert.equal(await runPlugin({ env: { CNI_COMMAND: 'STATUS' }, readStdin: () => JSON.stringify(conf), stdout: (s) => (out += s), stderr: () => undefined }), 0);
  assert.equal(out, '');
});

test('a router that answers something other than JSON is unavailable (11), not a crash', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-fake-router-'));
  const socket = join(dir, 'weft.sock');
  const server = createServer((_req, res) => res.end('<html>'));
  await new Promise<void>((r) => server.listen(socket, r));
  t.after(async () => {
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });
  const r = await plugin(addEnv, { cniVersion: '1.0.0', name: 'n', type: 'weft-net', socket });
  assert.equal(r.json.code, 11);
  assert.match(r.json.msg, /non-JSON answer/);
});
