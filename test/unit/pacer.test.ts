/** The rhythm of level-triggered passes: busy, stretching when quiet, back at a poke. */
import { test, mock, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { Pacer } from '../../src/common/pacer';
import { fdbLineMatters, nftLineMatters } from '../../src/sys/monitor';

const T0 = 1_700_000_000_000;
afterEach(() => mock.timers.reset());

/** Advances the mocked clock in steps, letting each pass's promise settle. */
async function advance(ms: number, step = 10): Promise<void> {
  for (let t = 0; t < ms; t += step) {
    mock.timers.tick(step);
    for (let i = 0; i < 5; i++) await Promise.resolve();
  }
}

/** A pacer whose passes record their start times and answer `busy()`. */
function pacer(o: { busyMs: number; idleMs: number; settleMs?: number }, busy: () => boolean = () => false, slowMs = 0) {
  const starts: number[] = [];
  let running = 0;
  let overlapped = false;
  const p = new Pacer(async () => {
    starts.push(Date.now() - T0);
    if (++running > 1) overlapped = true;
    if (slowMs) await new Promise((r) => setTimeout(r, slowMs));
    running--;
    return busy();
  }, o);
  return { p, starts, overlapped: () => overlapped };
}

test('quiet passes double the gap up to idleMs; a busy pass brings it back to busyMs', async () => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: T0 });
  let busy = false;
  const { p, starts } = pacer({ busyMs: 100, idleMs: 1000 }, () => busy);
  await p.start();
  await advance(4000);
  // 100, then gaps of 200, 400, 800, then 1000 each
  assert.deepEqual(starts.slice(0, 7), [100, 300, 700, 1500, 2500, 3500]);
  busy = true;
  await advance(510); // the pass at 4500 is busy
  assert.deepEqual(starts.slice(-1), [4500]);
  assert.equal(p.nextGapMs, 100);
  const n = starts.length;
  await advance(300);
  assert.deepEqual(starts.slice(n), [4600, 4700, 4800], 'busy passes every busyMs');
  await p.stop();
});

test('a poke during a long gap brings the pass forward: settleMs from now, not sooner than busyMs after the last', async () => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: T0 });
  const { p, starts } = pacer({ busyMs: 100, idleMs: 10_000, settleMs: 50 });
  await p.start();
  await advance(1600); // passes at 100, 300, 700, 1500; the next planned at 3100
  assert.deepEqual(starts, [100, 300, 700, 1500]);
  assert.equal(p.nextGapMs, 1600);
  p.poke(); // at 1600: busyMs after 1500 is 1600, settle makes it 1650
  await advance(100);
  assert.deepEqual(starts, [100, 300, 700, 1500, 1650]);
  // the poked pass was quiet itself, but the gap starts again from busyMs
  assert.equal(p.nextGapMs, 200);
  await advance(200);
  assert.deepEqual(starts.slice(-1), [1850]);
  p.poke();
  p.poke(); // a burst is one pass
  await advance(60);
  assert.equal(starts.filter((s) => s > 1850 && s <= 1910).length, 0, 'not sooner than busyMs after the last pass');
  await advance(100);
  assert.deepEqual(starts.slice(-1), [1950]);
  await p.stop();
  const after = starts.length;
  p.poke();
  await advance(500);
  assert.equal(starts.length, after, 'no pass after stop');
});

test('idleMs at or below busyMs keeps a fixed interval; passes never overlap', async () => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: T0 });
  const { p, starts, overlapped } = pacer({ busyMs: 100, idleMs: 100 }, () => false, 150);
  await p.start();
  await advance(1000);
  assert.ok(starts.length >= 4, `${starts.length} passes`);
  // a pass of 150 ms with a gap of 100: the next starts when it ends, never during it
  for (let i = 1; i < starts.length; i++) assert.ok(starts[i]! - starts[i - 1]! >= 150, `passes at ${starts}`);
  assert.equal(overlapped(), false);
  // stop waits for the pass under way
  const stopped = p.stop();
  await advance(200);
  await stopped;
});

test('a failed pass counts as busy', async () => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: T0 });
  const starts: number[] = [];
  const p = new Pacer(async () => {
    starts.push(Date.now() - T0);
    throw new Error('read failed');
  }, { busyMs: 100, idleMs: 1000 });
  await p.start();
  await advance(500);
  assert.deepEqual(starts, [100, 200, 300, 400, 500]);
  await p.stop();
});

test('the kernel watch keeps the changes weft programs and drops churn that is not its own', () => {
  const devs = ['vxlan-6784', 'vxlan-sleeve'];
  assert.ok(fdbLineMatters('00:00:00:00:00:00 dev vxlan-6784 dst 172.30.0.12 self permanent', devs));
  assert.ok(fdbLineMatters('Deleted 00:00:00:00:00:00 dev vxlan-sleeve dst 172.30.0.12 self permanent', devs));
  assert.equal(fdbLineMatters('76:29:10:8b:28:d8 dev vethwepl1 master weave', devs), false, 'the bridge learning a pod');
  assert.equal(fdbLineMatters('76:29:10:8b:28:d8 dev vxlan-6784 master weave', devs), false, 'the bridge learning a remote pod on the VXLAN port');
  assert.equal(fdbLineMatters('00:00:00:00:00:00 dev other-vx dst 10.1.1.1 self permanent', devs), false, 'a device weft does not own');
  assert.ok(nftLineMatters('delete rule ip filter FORWARD handle 7'));
  assert.ok(nftLineMatters('add chain ip nat WEFT-MASQ'));
  assert.ok(nftLineMatters('delete table ip filter'));
  assert.equal(nftLineMatters('# new generation 3 by process 27977 (iptables-nft)'), false);
  assert.equal(nftLineMatters('add element inet weft-policy pods { 10.32.0.5 }'), false);
});
