/**
 * End to end: the sandbox (the same code as `weft sandbox`) builds hosts as namespaces on one
 * underlay, runs the real dist/weft router in each and attaches pods with the real
 * dist/weft-net. Each suite uses its own namespace prefix and state directory and removes
 * everything in `after`, so it never meets a user's `weft sandbox` (prefix wsb).
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { uid, WEFT } from '../helpers/netns';
import { needs, NETNS } from '../helpers/needs';
import { eventually, inRange, namespacesWith, newSandbox, processesMentioning, upOpts } from '../helpers/sandbox';
import { Sandbox, type SandboxPod } from '../../src/sandbox';

const skip = needs(NETNS);

describe('sandbox: 2 hosts x 2 pods', { skip, concurrency: false, timeout: 180_000 }, () => {
  let sb: Sandbox;
  before(async () => {
    sb = newSandbox('a');
    await sb.up(upOpts(2, 2));
  });
  after(async () => {
    await sb?.down();
  });

  test('builds the namespaces, a router per host, and records them', async () => {
    const ns = namespacesWith(sb.prefix).sort();
    assert.deepEqual(ns, [`${sb.prefix}-h1`, `${sb.prefix}-h1-p1`, `${sb.prefix}-h1-p2`, `${sb.prefix}-h2`, `${sb.prefix}-h2-p1`, `${sb.prefix}-h2-p2`, `${sb.prefix}-ul`].sort());
    assert.equal(sb.hosts.length, 2);
    assert.deepEqual(sb.hosts.map((h) => h.address), ['172.30.0.11', '172.30.0.12']);
    // a later process sees the same sandbox through the state file
    const again = await Sandbox.open({ prefix: sb.prefix, dir: sb.dir });
    assert.deepEqual(again.pods.map((p) => p.cidr), sb.pods.map((p) => p.cidr));
    const st = await again.status();
    assert.ok(st.hosts.every((h) => h.alive && h.report), 'every router alive and answering');
  });

  test('all pods get distinct addresses in 10.32.0.0/12', () => {
    const addrs = sb.pods.map((p) => p.address);
    assert.equal(addrs.length, 4);
    for (const a of addrs) assert.ok(inRange(a, '10.32.0.0/12'), `${a} in 10.32.0.0/12`);
    assert.equal(new Set(addrs).size, 4, `distinct: ${addrs.join(' ')}`);
  });

  test('pods on the same host ping each other', async () => {
    for (const h of [1, 2]) {
      const [a, b] = sb.podsOf(h) as [SandboxPod, SandboxPod];
      assert.ok(await sb.ping(a, b), `${a.name} -> ${b.name} (${b.address})`);
      assert.ok(await sb.ping(b, a), `${b.name} -> ${a.name} (${a.address})`);
    }
  });

  test("host2's first pod is in 10.40.0.0/13 (the upper half, handed over by host1)", async () => {
    const p = sb.podsOf(2).find((x) => x.name.endsWith('-p1'))!;
    assert.ok(inRange(p.address, '10.40.0.0/13'), `${p.name} ${p.address}`);
    // as in the seeds: host2's space starts at 10.40.0.0, its bridge takes .1, its pods (attached
    // concurrently, so in either order) .2 and .3
    assert.deepEqual(sb.podsOf(2).map((x) => x.address).sort(), ['10.40.0.2', '10.40.0.3']);
    const r2 = await sb.report(2);
    assert.equal(r2.ipam.attachments[0]!.address, '10.40.0.1/12', 'the bridge comes first in 10.40.0.0/13');
    const owners = (await sb.report(1)).ipam.owners as { nickname?: string; size: number }[];
    assert.equal(owners.find((o) => o.nickname === 'host2')?.size, 2 ** 19, 'host2 owns the upper half, 10.40.0.0/13');
  });

  test('every pod pings every other pod, across hosts too', async () => {
    const m = await sb.pingMatrix();
    assert.deepEqual(m.duplicates, []);
    assert.equal(m.sameHost.ok, m.sameHost.total);
    assert.equal(m.crossHost.total, 8);
    assert.equal(m.crossHost.ok, m.crossHost.total, `cross-host pings: ${m.crossHost.ok}/${m.crossHost.total}`);
  });

  test('down leaves no namespace with the prefix and no router process', async () => {
    const pids = sb.hosts.map((h) => h.pid!);
    const d = await sb.down();
    assert.equal(d.routers.length, 2);
    assert.deepEqual(namespacesWith(sb.prefix), []);
    assert.deepEqual(processesMentioning(sb.dir), []);
    for (const pid of pids) assert.ok(!existsSync(`/proc/${pid}/cmdline`) || !readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(sb.dir));
    assert.ok(!existsSync(sb.dir), 'state dir removed');
    const again = await sb.down();
    assert.deepEqual([again.routers.length, again.namespaces.length, again.dirRemoved], [0, 0, undefined], 'down is idempotent');
  });
});

describe('sandbox: 3 hosts, mesh, failures', { skip, concurrency: false, timeout: 300_000 }, () => {
  let sb: Sandbox;
  const meshComplete = async () => {
    const rs = await sb.reports(3000);
    return rs.every((r) => !(r instanceof Error) && r.mesh?.peers.length === 3 && r.mesh.connections.filter((c) => c.state === 'established').length === 2);
  };
  const crossPing = async (a: SandboxPod, b: SandboxPod) => (await sb.ping(a, b)) && (await sb.ping(b, a));

  before(async () => {
    sb = newSandbox('b');
    await sb.up(upOpts(3, 2));
  });
  after(async () => {
    await sb?.down();
  });

  test('3 hosts reach full mesh: 3 peers each, 6 established connections in total', async () => {
    assert.ok(await eventually(meshComplete, 30_000), 'mesh complete within 30 s');
    const rs = await sb.reports();
    let established = 0;
    for (const r of rs) {
      assert.ok(!(r instanceof Error));
      assert.equal(r.mesh.peers.length, 3, `${r.router.nickname}: ${r.mesh.peers.map((p) => p.nickname).join(',')}`);
      established += r.mesh.connections.filter((c) => c.state === 'established').length;
    }
    assert.equal(established, 6);
    // the summary (what `up` and the bench poll) says what the report says
    const ss = await sb.summaries();
    ss.forEach((s, k) => {
      const r = rs[k]!;
      assert.ok(!(s instanceof Error) && !(r instanceof Error));
      assert.deepEqual(s, {
        peers: r.mesh.peers.length,
        reachable: r.mesh.peers.filter((p) => p.reachable).length,
        established: r.mesh.connections.filter((c) => c.state === 'established').length,
        ipam: r.ipam.status,
      });
      assert.deepEqual([s.peers, s.reachable, s.established, s.ipam], [3, 3, 2, 'ready']);
    });
  });

  test('every pod pings every other pod', async () => {
    const m = await sb.pingMatrix();
    assert.equal(m.pods.length, 6);
    assert.deepEqual(m.duplicates, []);
    assert.equal(m.sameHost.ok + m.crossHost.ok, 30, `same host ${m.sameHost.ok}/${m.sameHost.total}, across ${m.crossHost.ok}/${m.crossHost.total}`);
  });

  test('a host cut off the underlay is unreachable, and reachable again once reconnected', async () => {
    const [a] = sb.podsOf(1) as [SandboxPod];
    const [c] = sb.podsOf(3) as [SandboxPod];
    await sb.disconnect(3);
    try {
      assert.equal(await sb.ping(a, c, 1), false, 'no traffic to a host that is cut off');
      // once the mesh gives the connections up (three missed heartbeats), the summary counts
      // host 3 as known but not reachable, as the report does
      const cutOff = async () => {
        const [s] = await sb.summaries();
        return s !== undefined && !(s instanceof Error) && s.peers === 3 && s.reachable === 2;
      };
      assert.ok(await eventually(cutOff, 40_000, 500), 'host 1 sees host 3 known but unreachable within 40 s');
      const [s] = await sb.summaries();
      const r = await sb.report(1);
      assert.ok(!(s instanceof Error));
      assert.equal(s!.reachable, r.mesh.peers.filter((p) => p.reachable).length, 'summary and report agree on the reachable peers');
    } finally {
      await sb.reconnect(3);
    }
    assert.ok(await eventually(() => crossPing(a, c), 60_000, 500), 'pings again within 60 s of reconnecting');
    assert.ok(await eventually(meshComplete, 60_000), 'full mesh again');
  });

  test('kill -9 of a router: pods keep talking, the restarted router rejoins with the same name', async () => {
    const before = await sb.report(2);
    const [a] = sb.podsOf(1) as [SandboxPod];
    const [b] = sb.podsOf(2) as [SandboxPod];
    await sb.killRouter(2, 'SIGKILL');
    assert.ok(await crossPing(a, b), 'the kernel data path carries traffic while the router is down');
    const pid = await sb.startRouter(2);
    assert.ok(pid > 0);
    const after = await sb.report(2);
    assert.equal(after.router.name, before.router.name, 'peer name stable across restarts');
    assert.ok(await eventually(meshComplete, 60_000), 'full mesh again');
    assert.ok(await eventually(() => crossPing(a, b), 30_000, 500));
  });

  test('more pods after set-up get fresh addresses and reach the others', async () => {
    const added = await sb.addPods(2, 2);
    assert.equal(added.length, 2);
    assert.deepEqual(added.map((p) => p.name), [`${sb.prefix}-h2-p3`, `${sb.prefix}-h2-p4`]);
    const addrs = sb.pods.map((p) => p.address);
    assert.equal(new Set(addrs).size, addrs.length, `distinct: ${addrs.join(' ')}`);
    const [a] = sb.podsOf(1) as [SandboxPod];
    for (const p of added) assert.ok(await eventually(() => crossPing(a, p), 10_000, 500), `${a.name} <-> ${p.name}`);
    await sb.removePod(added[1]!);
    assert.ok(!namespacesWith(sb.prefix).includes(added[1]!.name));
    assert.equal(sb.pods.length, 7);
  });
});

describe('weft sandbox (the CLI in the single executable)', { skip, concurrency: false, timeout: 180_000 }, () => {
  const prefix = `wsec${uid().slice(0, 4)}`;
  const weft = (args: string[], timeout = 120_000) => spawnSync(WEFT, ['sandbox', ...args], { encoding: 'utf8', timeout });
  after(() => {
    weft(['down', '--prefix', prefix]);
  });

  test('up, status, down', () => {
    const up = weft(['up', '--hosts', '2', '--pods', '1', '--prefix', prefix, '--router-args', '--log-level debug']);
    assert.equal(up.status, 0, up.stderr + up.stdout);
    assert.match(up.stdout, /Service: router/);
    assert.match(up.stdout, /connectivity: 2\/2 pings ok, all ok/);
    const st = weft(['status', '--prefix', prefix, '--json']);
    assert.equal(st.status, 0, st.stderr);
    const j = JSON.parse(st.stdout);
    assert.equal(j.hosts.length, 2);
    assert.ok(j.hosts.every((h: { alive: boolean }) => h.alive));
    assert.equal(j.pods.length, 2);
    // routers survive the command that started them, and got the extra arguments
    const log = readFileSync(`/run/weft-sandbox/${prefix}/h1/router.log`, 'utf8');
    assert.match(log, /--log-level debug/);
    const down = weft(['down', '--prefix', prefix]);
    assert.equal(down.status, 0, down.stderr);
    assert.match(down.stdout, /deleted 5 namespaces/);
    assert.deepEqual(namespacesWith(prefix), []);
    assert.deepEqual(processesMentioning(`/run/weft-sandbox/${prefix}/`), []);
    assert.match(weft(['down', '--prefix', prefix]).stdout, /nothing to remove/);
  });

  test('a set-up failure exits non-zero and leaves nothing behind', () => {
    const r = weft(['up', '--hosts', '2', '--pods', '1', '--prefix', prefix, '--plugin', '/bin/false', '--no-matrix']);
    assert.equal(r.status, 1, r.stdout);
    assert.match(r.stderr, /weft-net ADD failed/);
    assert.deepEqual(namespacesWith(prefix), []);
    assert.deepEqual(processesMentioning(`/run/weft-sandbox/${prefix}/`), []);
    assert.ok(!existsSync(`/run/weft-sandbox/${prefix}`));
  });

  test('options are validated, errors name the flag', () => {
    for (const [args, flag] of [
      [['--hosts', '0'], '--hosts'],
      [['--hosts', '65'], '--hosts'],
      [['--pods', '65'], '--pods'],
      [['--mtu', '500'], '--mtu'],
      [['--plugin', '/nonexistent'], '--plugin'],
      [['--router-args', '--socket /x'], '--router-args'],
      [['--prefix', 'Bad-Prefix'], '--prefix'],
      [['--underlay', 'dhcp'], '--underlay'],
    ] as [string[], string][]) {
      const r = weft(['up', ...args]);
      assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.ok(r.stderr.includes(flag), `${args.join(' ')}: ${r.stderr}`);
    }
    for (const sub of ['up', 'down', 'status']) {
      const h = weft([sub, '--help']);
      assert.equal(h.status, 0);
      assert.match(h.stdout, /Examples:/);
    }
  });
});
