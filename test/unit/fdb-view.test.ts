import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { FdbView, type FdbEntry } from '../../src/sys/fdb';

const ZERO = '00:00:00:00:00:00';
const DEV = 'vxlan-6784';

/** A kernel table behind a fake reader that counts its reads. */
function kernel(initial: FdbEntry[]) {
  const k = { table: [...initial], reads: 0, hold: undefined as Promise<void> | undefined };
  const read = async () => {
    k.reads++;
    const snapshot = k.table.map((e) => ({ ...e }));
    if (k.hold) await k.hold;
    return snapshot;
  };
  return { k, read };
}
const e = (mac: string, dst: string): FdbEntry => ({ mac, dst, flags: ['self'], state: 'permanent' });
const sorted = (xs: FdbEntry[]) => xs.map((x) => `${x.mac} ${x.dst}`).sort();
const started = { source: 'bridge' as const, line: '(monitor started)' };

test('the view reads a device once while the monitor runs, then follows its reports and the batches written', async () => {
  mock.timers.enable({ apis: ['Date'], now: 1_000_000 });
  try {
    const { k, read } = kernel([e(ZERO, '10.0.0.2')]);
    const v = new FdbView(1000, read);
    v.watch([DEV]);
    // no monitor yet: every call reads
    await v.entries(DEV);
    await v.entries(DEV);
    assert.equal(k.reads, 2);
    v.feed(started);
    // within the settle window the monitor may not have subscribed: not kept
    await v.entries(DEV);
    await v.entries(DEV);
    assert.equal(k.reads, 4);
    mock.timers.tick(1000);
    await v.entries(DEV);
    assert.deepEqual(sorted(await v.entries(DEV)), [`${ZERO} 10.0.0.2`]);
    assert.equal(k.reads, 5, 'kept after one read');
    // the monitor's lines, as `bridge monitor fdb` prints them
    v.feed({ source: 'bridge', line: `${ZERO} dev ${DEV} dst 10.0.0.3 self permanent` });
    v.feed({ source: 'bridge', line: `aa:bb:cc:dd:ee:01 dev ${DEV} dst 10.0.0.3 self ` });
    v.feed({ source: 'bridge', line: `Deleted ${ZERO} dev ${DEV} dst 10.0.0.2 self permanent` });
    v.feed({ source: 'ip', line: `Deleted ${ZERO} dev ${DEV} dst 10.0.0.3 self permanent` });
    assert.deepEqual(sorted(await v.entries(DEV)), [`${ZERO} 10.0.0.3`, `aa:bb:cc:dd:ee:01 10.0.0.3`]);
    // batch lines that succeeded, before the kernel reports them; the bridge's own entries are not the device's
    v.wrote([`fdb append ${ZERO} dev ${DEV} dst 10.0.0.4 self permanent`, `fdb del aa:bb:cc:dd:ee:01 dev ${DEV} dst 10.0.0.3 self`, `fdb del aa:bb:cc:dd:ee:01 dev ${DEV} master`]);
    assert.deepEqual(sorted(await v.entries(DEV)), [`${ZERO} 10.0.0.3`, `${ZERO} 10.0.0.4`]);
    assert.equal(k.reads, 5, 'no read for any of that');
    // a batch that failed part-way: read again
    v.forget([DEV]);
    await v.entries(DEV);
    assert.equal(k.reads, 6);
    // the monitor ended: read every time until it runs (and has settled) again
    v.feed({ source: 'bridge', line: '(monitor ended)' });
    await v.entries(DEV);
    await v.entries(DEV);
    assert.equal(k.reads, 8);
    // a device the monitor does not report on is always read
    await v.entries('other');
    await v.entries('other');
    assert.equal(k.reads, 10);
  } finally {
    mock.timers.reset();
  }
});

test('a read that spans a restart of the monitor is not kept', async () => {
  mock.timers.enable({ apis: ['Date'], now: 1_000_000 });
  try {
    const { k, read } = kernel([e(ZERO, '10.0.0.2')]);
    const v = new FdbView(1000, read);
    v.watch([DEV]);
    v.feed(started);
    mock.timers.tick(1000);
    let release!: () => void;
    k.hold = new Promise((r) => (release = r));
    const p = v.entries(DEV);
    v.feed({ source: 'bridge', line: '(monitor ended)' });
    v.feed(started);
    release();
    await p;
    k.hold = undefined;
    mock.timers.tick(1000);
    await v.entries(DEV);
    assert.equal(k.reads, 2, 'read again: the first read began before the restart');
    await v.entries(DEV);
    assert.equal(k.reads, 2);
  } finally {
    mock.timers.reset();
  }
});
