/**
 * OrphanReclaim (src/router/repair.ts): at start, the allocations whose host end is missing are
 * released (their pod is gone); the bridge's own addresses never; young ones only after the
 * grace, and only if still the same allocation with no pair.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hostVethName, type AllocationRecord, type AttachmentKey } from '../../src/common/api';
import { createLogger } from '../../src/common/log';
import { OrphanReclaim } from '../../src/router/repair';
import { until } from '../helpers/netns';

const log = createLogger({ name: 't', level: 'silent' });
const NOW = Date.parse('2026-11-28T09:00:00Z');
const id = (k: AttachmentKey) => `${k.network}/${k.containerId}/${k.ifname}`;

function rec(containerId: string, ageMs: number, network = 'weftnet'): AllocationRecord {
  return { network, containerId, ifname: 'eth0', address: `10.32.0.${containerId.length}/12`, bridge: 'weave', createdAt: new Date(NOW - ageMs).toISOString() };
}

function fixture(recs: AllocationRecord[], ends: string[]) {
  const held = new Map(recs.map((r) => [id(r), r]));
  const hostEnds = new Set(ends);
  const locked: string[] = [];
  let commits = 0;
  const c = {
    allocations: {
      list: () => [...held.values()],
      get: (k: AttachmentKey) => held.get(id(k)),
      release: (k: AttachmentKey) => {
        const r = held.get(id(k));
        held.delete(id(k));
        return r;
      },
    },
    links: {
      hostEnds: async () => new Set(hostEnds),
      withName: async <T>(name: string, fn: () => Promise<T>) => {
        locked.push(name);
        return fn();
      },
    },
    commit: async () => void commits++,
    log,
  };
  return { c, held, hostEnds, locked, commits: () => commits };
}

test('at start: an allocation without its host end is released durably; one with it, and the gateways, are kept', async () => {
  const gone = rec('gone-pod', 60_000);
  const live = rec('live-pod', 60_000);
  const gw = rec('weave', 60_000, '_gateway');
  const f = fixture([gone, live, gw], [hostVethName(live), 'vethwe000000000']);
  const r = new OrphanReclaim(f.c, { graceMs: 10_000, now: () => NOW });
  await r.start();
  assert.deepEqual([...f.held.keys()].sort(), [id(gw), id(live)].sort());
  assert.equal(f.commits(), 1, 'one commit for the releases, before start resolves');
  assert.deepEqual(f.locked, [hostVethName(gone)], 'the release holds the attachment\'s lock');
  await r.stop();
});

test('nothing to release: no commit', async () => {
  const live = rec('live-pod', 60_000);
  const f = fixture([live], [hostVethName(live)]);
  await new OrphanReclaim(f.c, { graceMs: 10_000, now: () => NOW }).start();
  assert.equal(f.commits(), 0);
  assert.equal(f.held.size, 1);
});

test('a young allocation without a pair waits for the grace: released then if still pairless, kept if its pair came or it was made again', async () => {
  const young = rec('young', 10);
  const paired = rec('paired-later', 10);
  const again = rec('made-again', 10);
  const f = fixture([young, paired, again], []);
  const r = new OrphanReclaim(f.c, { graceMs: 50, now: () => NOW });
  await r.start();
  assert.equal(f.held.size, 3, 'nothing young released at start');
  assert.equal(f.commits(), 0);
  // meanwhile: one pair appears, one key is allocated afresh (a new record)
  f.hostEnds.add(hostVethName(paired));
  f.held.set(id(again), { ...again, createdAt: new Date(NOW).toISOString() });
  assert.ok(await until(() => !f.held.has(id(young)), 5000, 10), 'released after the grace');
  await r.stop();
  assert.ok(f.held.has(id(paired)), 'its pair appeared: kept');
  assert.ok(f.held.has(id(again)), 'a newer allocation of the key: kept');
  assert.equal(f.commits(), 1);
});

test('stop before the grace: the later look never runs', async () => {
  const young = rec('young', 0);
  const f = fixture([young], []);
  const r = new OrphanReclaim(f.c, { graceMs: 200, now: () => NOW });
  await r.start();
  await r.stop();
  assert.equal(f.held.size, 1);
  assert.deepEqual(f.locked, []);
});
