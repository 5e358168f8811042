/**
 * The sandbox's one machine-wide change: the neighbour table limits (src/sandbox/neigh.ts).
 * Raised for each sandbox's need, never below what was there, and the originals back when the
 * last sandbox gives its share back, also when the registry was lost. Runs as root; changes
 * net.ipv4.neigh.default.gc_thresh1/2/3 and restores them in `finally`.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, rmSync } from 'node:fs';
import { needs } from '../helpers/needs';
import { limitsFor, NEIGH_REGISTRY, neighNeed, raiseNeighLimits, readNeighLimits, releaseNeighLimits } from '../../src/sandbox/neigh';
import { ensureSysctl } from '../../src/sys/sysctl';

test('neighNeed grows with hosts and pods; limitsFor never goes below what was there', () => {
  assert.ok(neighNeed(32, 1) > 1024, '32 hosts need more than the kernel default of 1024');
  assert.ok(neighNeed(32, 1) > 2 * neighNeed(16, 1) - 256, 'the underlay and probes grow with the square of the hosts');
  assert.ok(neighNeed(2, 4) > neighNeed(2, 1));
  const orig = { thresh1: 128, thresh2: 512, thresh3: 1024 };
  assert.deepEqual(limitsFor(orig, 100), orig);
  assert.deepEqual(limitsFor(orig, 3000), { thresh1: 128, thresh2: 3000, thresh3: 6000 });
  assert.deepEqual(limitsFor({ thresh1: 1, thresh2: 9000, thresh3: 20000 }, 3000), { thresh1: 1, thresh2: 9000, thresh3: 20000 });
});

test('two sandboxes share the limits; the last one down restores the originals, from its state file when the registry is gone', { skip: needs({ root: true, built: true, tools: ['ip', 'nsenter'] }) }, async (t) => {
  if (existsSync(NEIGH_REGISTRY)) return t.skip('a sandbox holds the limits now; not touching them');
  const original = await readNeighLimits();
  try {
    const a = await raiseNeighLimits('wtneigha', 5000);
    assert.deepEqual(a.original, original);
    assert.deepEqual(await readNeighLimits(), limitsFor(original, 5000));
    const b = await raiseNeighLimits('wtneighb', 3000);
    assert.deepEqual(b.before, a.after);
    assert.deepEqual(await readNeighLimits(), limitsFor(original, 8000), 'covers both');
    assert.deepEqual(await releaseNeighLimits('wtneigha'), limitsFor(original, 3000));
    assert.deepEqual(await readNeighLimits(), limitsFor(original, 3000), 'b keeps its share');
    assert.equal(await releaseNeighLimits('wtneigha'), undefined, 'a second release is a no-op');
    assert.deepEqual(await releaseNeighLimits('wtneighb'), original);
    assert.deepEqual(await readNeighLimits(), original, 'the originals are back');
    assert.ok(!existsSync(NEIGH_REGISTRY));

    // a crash that lost the registry: the state file's record restores the originals
    const c = await raiseNeighLimits('wtneighc', 4000);
    rmSync(NEIGH_REGISTRY);
    assert.equal(await releaseNeighLimits('wtneighc'), undefined, 'nothing known, nothing done');
    assert.deepEqual(await readNeighLimits(), limitsFor(original, 4000));
    assert.deepEqual(await releaseNeighLimits('wtneighc', c.original), original);
    assert.deepEqual(await readNeighLimits(), original);
  } finally {
    rmSync(NEIGH_REGISTRY, { force: true });
    await ensureSysctl('net.ipv4.neigh.default.gc_thresh3', String(Math.max(original.thresh3, (await readNeighLimits()).thresh3)));
    await ensureSysctl('net.ipv4.neigh.default.gc_thresh1', String(original.thresh1));
    await ensureSysctl('net.ipv4.neigh.default.gc_thresh2', String(original.thresh2));
    await ensureSysctl('net.ipv4.neigh.default.gc_thresh3', String(original.thresh3));
  }
});
