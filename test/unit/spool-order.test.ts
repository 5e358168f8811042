/**
 * A DEL recorded in the spool releases only what existed before it: an ADD of the same key
 * after the record (the runtime's retry after a failed ADD, whose DEL the plugin had to record
 * because the router did not answer in time) must survive the drain, even though the
 * allocator answers that ADD with the allocation it already held.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Allocator } from '../../src/ipam/allocator';
import { parseCidr } from '../../src/common/ip';
import { createLogger } from '../../src/common/log';
import { SPOOL_SUBDIR, spoolRelease } from '../../src/common/spool';
import { SpoolDrainer } from '../../src/router/spool';
import { until } from '../helpers/netns';

const range = parseCidr('10.32.0.0/12')!;
const key = { network: 'weftnet', containerId: 'c1', ifname: 'eth0' };
const log = createLogger({ name: 't', level: 'silent' });

/** Waits until the wall clock (the records' timestamps, in ms) has moved on. */
const tick = async () => {
  const t = Date.now();
  assert.ok(await until(() => Date.now() > t, 1000, 1));
};

function fixture() {
  const dir = mkdtempSync(join(tmpdir(), 'weft-spool-'));
  const alloc = new Allocator(range, range, { owned: () => [range] });
  const spool = new SpoolDrainer({ allocations: alloc, commit: async () => undefined, log }, { stateDir: dir, socket: join(dir, 'weft.sock'), everyMs: 60_000 });
  return { dir, alloc, spool, record: () => spoolRelease(join(dir, SPOOL_SUBDIR), key), done: () => rmSync(dir, { recursive: true, force: true }) };
}

test('a recorded DEL releases the allocation it followed', async () => {
  const f = fixture();
  try {
    f.alloc.allocate(key, range, undefined, { bridge: 'weave' });
    await tick();
    await f.record();
    await f.spool.drain();
    assert.equal(f.alloc.get(key), undefined);
  } finally {
    f.done();
  }
});

test('an ADD after the recorded DEL keeps its allocation through the drain, though the allocator gave it the one it held', async () => {
  const f = fixture();
  try {
    const first = f.alloc.allocate(key, range, undefined, { bridge: 'weave' });
    await tick();
    await f.record(); // the DEL the router did not answer in time, recorded by the plugin
    await tick();
    const again = f.alloc.allocate(key, range, undefined, { bridge: 'weave' }); // the runtime's ADD retry
    assert.equal(again.address, first.address, 'idempotent: the same address');
    await f.spool.drain();
    assert.equal(f.alloc.get(key)?.address, first.address, 'the pod the ADD answered for keeps its address');
  } finally {
    f.done();
  }
});
