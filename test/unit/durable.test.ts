/**
 * "Allocations are fsynced before ADD gets its answer": a file-system layer that records every
 * call (open, write, fsync, close, rename) and the moment the answer is given, so the order
 * is checked, not only that the data is there afterwards. Also what a failing write leaves.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { realFs, writeFileAtomic, type DurableFs } from '../../src/common/fsutil';
import { JsonStore } from '../../src/ipam/store';
import { IpamService, type IpamFile } from '../../src/ipam/service';
import { IpamApi } from '../../src/router/ipam-api';
import { gatewayKey } from '../../src/datapath/bridge-addrs';
import { FakeNet } from '../helpers/fake-mesh';
import { createLogger } from '../../src/common/log';
import { parseCidr } from '../../src/common/ip';

type Ev = { op: 'open' | 'write' | 'fsync' | 'close' | 'rename' | 'rm' | 'reply'; path: string; to?: string; data?: string };

/** The real file system, with every call recorded in order; `fail` makes one kind of call throw. */
function recordingFs(events: Ev[], fail?: Ev['op']): DurableFs {
  const maybeFail = (op: Ev['op'], path: string) => {
    if (fail === op) throw Object.assign(new Error(`${op} ${path}: injected failure`), { code: 'EIO' });
  };
  return {
    async open(path, flags, mode) {
      events.push({ op: 'open', path });
      const fh = await realFs.open(path, flags, mode);
      return {
        async writeFile(data) {
          events.push({ op: 'write', path, data: String(data) });
          maybeFail('write', path);
          await fh.writeFile(data);
        },
        async sync() {
          events.push({ op: 'fsync', path });
          maybeFail('fsync', path);
          await fh.sync();
        },
        async close() {
          events.push({ op: 'close', path });
          await fh.close();
        },
      };
    },
    async rename(from, to) {
      events.push({ op: 'rename', path: from, to });
      maybeFail('rename', from);
      await realFs.rename(from, to);
    },
    async rm(path) {
      events.push({ op: 'rm', path });
      await realFs.rm(path);
    },
  };
}

/**
 * Asserts that before the reply at `replyAt`, some write put data matching `holds` into a
 * temporary file that was then fsynced, renamed over `target`, and whose directory was fsynced,
 * in that order.
 */
function assertDurableBefore(events: Ev[], replyAt: number, target: string, holds: (data: string) => boolean): void {
  const before = events.slice(0, replyAt);
  const w = before.findIndex((e) => e.op === 'write' && holds(e.data!));
  assert.ok(w >= 0, `no write holding the change before the reply: ${JSON.stringify(before.map((e) => e.op))}`);
  const tmp = before[w]!.path;
  const s = before.findIndex((e, i) => i > w && e.op === 'fsync' && e.path === tmp);
  assert.ok(s > w, 'the file with the change is fsynced before the reply');
  const r = before.findIndex((e, i) => i > s && e.op === 'rename' && e.path === tmp && e.to === target);
  assert.ok(r > s, 'it is renamed over the state file after its fsync and before the reply');
  const d = before.findIndex((e, i) => i > r && e.op === 'fsync' && e.path === join(target, '..'));
  assert.ok(d > r, 'the directory is fsynced after the rename and before the reply');
}

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'weft-durable-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('writeFileAtomic: write, fsync, close, rename over the target, fsync the directory, in that order', async (t) => {
  const dir = tempDir(t);
  const target = join(dir, 'f.json');
  writeFileSync(target, 'old');
  const events: Ev[] = [];
  await writeFileAtomic(target, 'new', 0o600, recordingFs(events));
  events.push({ op: 'reply', path: '' });
  const tmp = events[0]!.path;
  assert.notEqual(tmp, target, 'never written in place');
  assert.match(basename(tmp), /^\.f\.json\.\d+\.\d+\.tmp$/);
  assert.deepEqual(
    events.map((e) => [e.op, e.path === tmp ? 'tmp' : e.path === dir ? 'dir' : e.path, e.to === target ? 'target' : e.to]),
    [
      ['open', 'tmp', undefined],
      ['write', 'tmp', undefined],
      ['fsync', 'tmp', undefined],
      ['close', 'tmp', undefined],
      ['rename', 'tmp', 'target'],
      ['open', 'dir', undefined],
      ['fsync', 'dir', undefined],
      ['close', 'dir', undefined],
      ['reply', '', undefined],
    ],
  );
  assertDurableBefore(events, events.length - 1, target, (d) => d === 'new');
  assert.equal(readFileSync(target, 'utf8'), 'new');
});

for (const op of ['write', 'fsync', 'rename'] as const) {
  test(`writeFileAtomic: a failing ${op} rejects, keeps the old content and leaves no temporary file`, async (t) => {
    const dir = tempDir(t);
    const target = join(dir, 'f.json');
    writeFileSync(target, 'old');
    const events: Ev[] = [];
    await assert.rejects(writeFileAtomic(target, 'new', 0o600, recordingFs(events, op)), /injected failure/);
    assert.equal(readFileSync(target, 'utf8'), 'old');
    assert.deepEqual(readdirSync(dir), ['f.json']);
    assert.ok(events.some((e) => e.op === 'close') || op === 'rename', 'the file is closed');
  });
}

test('JsonStore: commit resolves only after the write holding the change is fsynced and renamed into place', async (t) => {
  const dir = tempDir(t);
  const events: Ev[] = [];
  let n = 0;
  const { store } = await JsonStore.open<{ n: number }>(dir, 's.json', () => ({ n }), recordingFs(events));
  const target = join(dir, 's.json');
  n = 1;
  const first = store.commit().then(() => events.push({ op: 'reply', path: 'first' }));
  // a change made while the first write is under way is carried by a later write
  n = 2;
  const second = store.commit().then(() => events.push({ op: 'reply', path: 'second' }));
  await Promise.all([first, second]);
  const at = (who: string) => events.findIndex((e) => e.op === 'reply' && e.path === who);
  assertDurableBefore(events, at('first'), target, (d) => JSON.parse(d).n >= 1);
  assertDurableBefore(events, at('second'), target, (d) => JSON.parse(d).n === 2);
  assert.equal(JSON.parse(readFileSync(target, 'utf8')).n, 2);
});

test('JsonStore: a failed write rejects the commits it carried; the next commit writes again', async (t) => {
  const dir = tempDir(t);
  const events: Ev[] = [];
  let failing = true;
  const fsys = recordingFs(events);
  const flaky: DurableFs = { ...fsys, rename: (a, b) => (failing ? Promise.reject(new Error('disk full')) : fsys.rename(a, b)) };
  const { store } = await JsonStore.open<{ n: number }>(dir, 's.json', () => ({ n: 7 }), flaky);
  await assert.rejects(store.commit(), /disk full/);
  failing = false;
  await store.commit();
  assert.equal(JSON.parse(readFileSync(join(dir, 's.json'), 'utf8')).n, 7);
  assert.deepEqual(readdirSync(dir), ['s.json']);
});

test('JsonStore: a snapshot that throws rejects the commit instead of leaving it waiting', async (t) => {
  const dir = tempDir(t);
  let bad = true;
  const { store } = await JsonStore.open<{ n: number }>(dir, 's.json', () => {
    if (bad) throw new Error('cannot snapshot');
    return { n: 1 };
  });
  await assert.rejects(store.commit(), /cannot snapshot/);
  bad = false;
  await store.commit();
  assert.equal(JSON.parse(readFileSync(join(dir, 's.json'), 'utf8')).n, 1);
});

/** An IPAM API over a real IpamService and store; only the host network is a stand-in. */
async function ipamApi(dir: string, events: Ev[], fail?: Ev['op']) {
  const range = parseCidr('10.32.0.0/12')!;
  const log = createLogger({ name: 't', level: 'silent' });
  const self = '02:00:00:00:00:01';
  const { store } = await JsonStore.open<IpamFile>(dir, 'ipam.json', () => ipam.snapshot(), recordingFs(events, fail));
  const commit = () => store.commit();
  const ipam: IpamService = new IpamService({ self, mesh: new FakeNet().node(self), log, commit }, { range, defaultSubnet: range, init: { mode: 'seed', names: [self] } });
  const api = new IpamApi({
    ipam,
    commit,
    bridge: { name: 'weave', ensure: async () => ({ ifname: 'weave', address: '02:00:00:00:00:aa', mtu: 1450, operstate: 'UP', flags: ['UP'] }) },
    gateways: { gatewayFor: (s) => ipam.allocate(gatewayKey('weave', s), s, undefined, { bridge: 'weave' }), ensure: async () => undefined },
    mtu: () => 1450,
    log,
  });
  return { ipam, api, target: join(dir, 'ipam.json') };
}

test('ADD: the router answers an allocation only after ipam.json holding it is fsynced and renamed into place', async (t) => {
  const dir = tempDir(t);
  const events: Ev[] = [];
  const { api, target } = await ipamApi(dir, events);
  const key = { network: 'n', containerId: 'c1', ifname: 'eth0', bridge: 'weave' };
  const res = await api.allocate(key);
  events.push({ op: 'reply', path: 'ADD' });
  const holds = (d: string) => (JSON.parse(d) as IpamFile).allocations.some((a) => a.containerId === 'c1' && a.address === res.address);
  assertDurableBefore(events, events.length - 1, target, holds);
  // and DEL: the release is on disk before its answer
  const rel = await api.release({ network: 'n', containerId: 'c1', ifname: 'eth0' });
  events.push({ op: 'reply', path: 'DEL' });
  assert.equal(rel.released, true);
  const from = events.findIndex((e) => e.op === 'reply' && e.path === 'ADD') + 1;
  const after = events.slice(from);
  assertDurableBefore(after, after.length - 1, target, (d) => !(JSON.parse(d) as IpamFile).allocations.some((a) => a.containerId === 'c1'));
});

test('ADD: when the allocation cannot be made durable the answer is an error and memory forgets it', async (t) => {
  const dir = tempDir(t);
  const events: Ev[] = [];
  const { api, ipam } = await ipamApi(dir, events, 'fsync');
  await assert.rejects(api.allocate({ network: 'n', containerId: 'c1', ifname: 'eth0', bridge: 'weave' }), /injected failure/);
  assert.deepEqual(ipam.allocator.list(), [], 'neither the pod nor the gateway stays allocated');
  assert.deepEqual(readdirSync(dir), [], 'no file left');
});
