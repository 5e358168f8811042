/**
 * The router's warm `ip -batch` processes (src/sys/warm.ts), in namespaces this file creates.
 * Only reads happen in the test's own namespace.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Netns, processesIn, until } from '../helpers/netns';
import { needs } from '../helpers/needs';
import { WarmIp } from '../../src/sys/warm';
import { EnvError, ExistsError, LinkNotFoundError, NetnsNotFoundError, SysError } from '../../src/common/errors';
import { isAlive } from '../../src/sys/process';

const skip = needs({ root: true, tools: ['ip', 'nsenter'] });

test('warm ip: batches in a pod namespace, JSON reads, typed failures, a deadline, refills, nothing left after stop', { skip }, async () => {
  const ns = Netns.create('wt-warm');
  const w = new WarmIp({ size: 1, refillDelayMs: 1 });
  const pids = new Set<number>();
  const collect = () => w.waitingPids().forEach((p) => pids.add(p));
  try {
    await w.start();
    assert.ok(await until(() => Object.values(w.waiting()).every((n) => n === 1) && Object.keys(w.waiting()).length === 2, 5000), `one waiting per plain kind: ${JSON.stringify(w.waiting())}`);
    collect();

    await w.batch(['link add wt0 type veth peer name wt1', 'addr add 10.9.0.1/24 dev wt0', 'link set wt0 up', 'link set wt1 up'], { netns: ns.path });
    assert.deepEqual(ns.addrs('wt0'), ['10.9.0.1/24']);
    const r = await w.batch(['addr show dev wt0', 'route show'], { netns: ns.path, json: true });
    const [addr, routes] = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(addr[0].ifname, 'wt0');
    assert.ok(addr[0].flags.includes('UP'));
    assert.ok(routes.some((x: { dst: string }) => x.dst === '10.9.0.0/24'));
    const host = await w.batch(['link show dev lo'], { json: true });
    assert.equal(JSON.parse(host.stdout)[0].ifname, 'lo', 'the caller\'s own namespace (read only)');

    await assert.rejects(w.batch(['link add wt0 type veth peer name wt2'], { netns: ns.path }), ExistsError);
    await assert.rejects(w.batch(['link set nosuch0 up'], { netns: ns.path }), LinkNotFoundError);
    await assert.rejects(w.batch(['link show'], { netns: `${ns.path}-gone` }), NetnsNotFoundError);
    await assert.rejects(w.batch(['link show'], { netns: '/etc/hostname' }), NetnsNotFoundError, 'a file that is no namespace');
    await assert.rejects(w.batch(['link show'], { netns: '/x\nlink del wt0' }), EnvError);
    assert.deepEqual(ns.addrs('wt0'), ['10.9.0.1/24'], 'a refused path ran nothing');
    const raw = await w.batchRaw(['link show dev wt1', 'link show dev nosuch0'], { netns: ns.path, json: true });
    assert.notEqual(raw.code, 0);
    assert.equal(JSON.parse(raw.stdout.trim())[0].ifname, 'wt1', 'output before the failing line is kept');
    const t0 = Date.now();
    await assert.rejects(w.batch(['monitor link'], { netns: ns.path, timeoutMs: 300 }), (e: Error) => e instanceof SysError && /no answer within 300 ms/.test(e.message));
    assert.ok(Date.now() - t0 < 5000);

    assert.ok(await until(() => Object.values(w.waiting()).every((n) => n === 1) && Object.keys(w.waiting()).length === 4, 5000), `used processes replaced, JSON kinds too once used: ${JSON.stringify(w.waiting())}`);
    collect();
  } finally {
    await w.stop();
    ns.destroy();
  }
  assert.ok(pids.size >= 4, "the four kinds were waiting at the end");
  assert.ok(await until(() => [...pids].every((p) => !isAlive(p)), 5000), 'no waiting process outlives stop()');
});

test('warm ip: an entered batch is in the pod namespace before its lines come, runs once, and a cancelled one exits', { skip }, async () => {
  const ns = Netns.create('wt-enter');
  const w = new WarmIp({ size: 1, refillDelayMs: 1 });
  try {
    await w.start();
    const e = w.enter({ netns: ns.path });
    assert.ok(await until(() => processesIn(ns.path).length === 1, 5000), 'the process entered the namespace with no lines sent');
    await e.batch(['link add we0 type veth peer name we1', 'link set we0 up']);
    assert.deepEqual(ns.links().map((l) => l.ifname).filter((l) => l.startsWith('we')).sort(), ['we0', 'we1']);
    await assert.rejects(e.batch(['link del we0']), /runs once/);
    assert.throws(() => e.cancel(), /runs once/);

    const c = w.enter({ netns: ns.path });
    assert.ok(await until(() => processesIn(ns.path).length === 1, 5000));
    c.cancel();
    assert.ok(await until(() => processesIn(ns.path).length === 0, 5000), 'a cancelled batch leaves no process in the namespace');
    assert.deepEqual(ns.links().map((l) => l.ifname).filter((l) => l.startsWith('we')).sort(), ['we0', 'we1'], 'and ran nothing');

    await assert.rejects(w.enter({ netns: `${ns.path}-gone` }).batch(['link show']), NetnsNotFoundError);
    await assert.rejects(w.enter({ netns: ns.path }).batch(['link set nosuch0 up']), LinkNotFoundError);
    assert.throws(() => w.enter({ netns: '/x\nlink del we0' }), EnvError);
  } finally {
    await w.stop();
    ns.destroy();
  }
});
