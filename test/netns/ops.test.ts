/** Operating one router: CLI, report, ps, metrics, health and readiness, inside namespaces. */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import parsePrometheus from 'parse-prometheus-text-format';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cni, cniEnv, httpGet, netConf, Netns, RouterProc, until, weftCli, WEFT } from '../helpers/netns';
import { needs, NETNS } from '../helpers/needs';

const skip = needs(NETNS);

type Family = { name: string; type: string; metrics: { value?: string; labels?: Record<string, string>; buckets?: Record<string, string>; count?: string }[] };

describe('operating a router', { skip, concurrency: false }, () => {
  let host: Netns;
  let router: RouterProc;
  const pods: Netns[] = [];
  const metrics = (): Family[] => {
    const r = httpGet(host, 'http://127.0.0.1:6782/metrics');
    assert.equal(r.status, 200);
    return parsePrometheus(r.body) as Family[];
  };
  const value = (fams: Family[], name: string, labels: Record<string, string> = {}) => {
    const f = fams.find((x) => x.name === name);
    assert.ok(f, `metric ${name} exported`);
    const m = f.metrics.find((x) => Object.entries(labels).every(([k, v]) => x.labels?.[k] === v));
    // a series that is not there is a failure, never a zero
    assert.ok(m, `series ${name}${JSON.stringify(labels)} exported`);
    return Number(m.value ?? m.count);
  };
  const readyz = () => {
    const r = httpGet(host, 'http://127.0.0.1:6782/readyz');
    return { status: r.status, missing: (JSON.parse(r.body) as { missing: string[] }).missing };
  };

  before(async () => {
    host = Netns.create('wo-h');
    // an advertised address gives the router its VXLAN device, which /readyz checks too
    router = new RouterProc(host, ['--nickname', 'opshost', '--advertise-addr', '127.0.0.1']);
    // no self-repair during these tests unless one asks for it: what /readyz sees stays put
    router.env = { WEFT_PROGRAM_MS: '60000' };
    await router.start();
  });
  after(async () => {
    await router?.destroy();
    for (const p of pods) p.destroy();
    host?.destroy();
  });

  test('metrics parse as Prometheus text and IP counts follow pods', () => {
    const before = metrics();
    for (const n of ['weft_connections', 'weft_peers', 'weft_ips', 'weft_max_ips', 'weft_ipam_unreachable_share', 'weft_ipam_pending_allocates', 'weft_plugin_requests_total', 'weft_allocation_duration_seconds', 'weft_gossip_messages_total', 'weft_gossip_bytes_total']) {
      assert.ok(before.some((f) => f.name === n), `${n} present`);
    }
    assert.ok(before.some((f) => f.name.startsWith('weft_process_')), 'process metrics under weft_process_');
    const add = (i: number) => {
      const p = Netns.create(`wo-p${i}`);
      pods.push(p);
      assert.equal(cni(host, cniEnv('ADD', `ops-${i}`, p.path), netConf(router.socket)).code, 0);
    };
    // one ADD first: a labelled series exists from its first count on
    add(1);
    const base = metrics();
    const ips0 = value(base, 'weft_ips');
    const adds0 = value(base, 'weft_plugin_requests_total', { verb: 'ADD', result: 'ok' });
    add(2);
    add(3);
    const mid = metrics();
    assert.equal(value(mid, 'weft_ips'), ips0 + 2);
    assert.equal(value(mid, 'weft_plugin_requests_total', { verb: 'ADD', result: 'ok' }), adds0 + 2);
    assert.equal(value(mid, 'weft_peers'), 1);
    assert.ok(value(mid, 'weft_max_ips') > 1000);
    for (const i of [2, 3]) assert.equal(cni(host, cniEnv('DEL', `ops-${i}`, pods[i - 1]!.path), netConf(router.socket)).code, 0);
    const after = metrics();
    assert.equal(value(after, 'weft_ips'), ips0);
    assert.equal(value(after, 'weft_plugin_requests_total', { verb: 'DEL', result: 'ok' }), 2);
    assert.throws(() => value(after, 'weft_plugin_requests_total', { verb: 'FROB' }), /series weft_plugin_requests_total\{"verb":"FROB"\} exported/);
  });

  test('report, ps and status agree with the pods that exist', () => {
    const r = weftCli(router.socket, ['report']);
    assert.equal(r.code, 0);
    const rep = JSON.parse(r.out);
    assert.equal(rep.router.nickname, 'opshost');
    assert.match(rep.router.name, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    const pods = rep.ipam.attachments.filter((a: any) => a.network !== '_gateway');
    assert.deepEqual(pods.map((a: any) => a.containerId), ['ops-1']);
    const ps = weftCli(router.socket, ['ps']).out.trim().split('\n');
    assert.equal(ps.length, rep.ipam.attachments.length);
    assert.match(ps[0]!, /^weave:expose [0-9a-f:]{17} 10\.\d+\.\d+\.\d+\/12$/, 'bridge first');
    const podAddr = pods[0].address;
    assert.ok(ps.some((l) => l === `ops-1 ${pods[0].mac} ${podAddr}`));
    const st = weftCli(router.socket, ['status']).out;
    assert.match(st, /Name: [0-9a-f:]{17}\(opshost\)/);
    assert.match(st, /Encryption: disabled/);
    assert.match(st, /Peers: 1 \(with 0 established connections\)/);
    assert.match(st, /Status: ready/);
    assert.match(st, /Range: 10\.32\.0\.0\/12/);
    const ipam = weftCli(router.socket, ['status', 'ipam']).out;
    assert.match(ipam, /\(opshost\) 1048576 IPs \(100\.0% of total/);
    // the field names the README calls stable, read by scripts
    const has = (o: any, keys: string[], where: string) => {
      for (const k of keys) assert.ok(o && k in o, `report ${where}.${k}`);
    };
    has(rep, ['version', 'router', 'mesh', 'ipam'], '');
    has(rep.router, ['name', 'nickname', 'bridge', 'bridgeMac', 'mtu', 'socket', 'encryption', 'port'], 'router');
    has(rep.mesh, ['targets', 'connections', 'peers'], 'mesh');
    has(rep.mesh.peers[0], ['name', 'nickname', 'uid', 'connections', 'reachable'], 'mesh.peers[]');
    has(rep.ipam, ['status', 'range', 'defaultSubnet', 'free', 'gateways', 'owners', 'attachments'], 'ipam');
    has(rep.ipam.owners[0], ['peer', 'nickname', 'size', 'share', 'reachable', 'free'], 'ipam.owners[]');
    for (const a of rep.ipam.attachments) has(a, ['network', 'containerId', 'ifname', 'address', 'bridge', 'createdAt'], 'ipam.attachments[]');
    // (the README lists gateway too; the router does not record it: reported to the lead)
    for (const a of pods) has(a, ['mac'], 'ipam.attachments[] of a pod');
    assert.equal(rep.ipam.attachments[0].network, '_gateway', "the bridge's own addresses first");
  });

  test('/healthz answers; /readyz fails while the bridge is missing and passes once the router put it back', async () => {
    const gw = () => JSON.parse(weftCli(router.socket, ['report']).out).ipam.attachments[0].address.split('/')[0];
    assert.equal(httpGet(host, 'http://127.0.0.1:6782/healthz').status, 200);
    assert.equal(httpGet(host, 'http://127.0.0.1:6782/readyz').status, 200);
    host.run('ip', ['link', 'del', 'weave']);
    const bad = httpGet(host, 'http://127.0.0.1:6782/readyz');
    assert.equal(bad.status, 503);
    assert.match(JSON.parse(bad.body).missing.join(';'), /bridge weave is missing/);
    assert.equal(httpGet(host, 'http://127.0.0.1:6782/healthz').status, 200, 'alive all the same');
    // a starting router puts the bridge back, with its address and the pods on it
    await router.kill('SIGTERM');
    await router.start();
    assert.equal(httpGet(host, 'http://127.0.0.1:6782/readyz').status, 200);
    assert.ok(pods[0]!.ping(gw()), 'the pod is back on the bridge after a restart');
    // and a running one repairs it by itself
    await router.kill('SIGTERM');
    router.env = { WEFT_PROGRAM_MS: '300' };
    await router.start();
    host.run('ip', ['link', 'del', 'weave']);
    assert.ok(await until(() => httpGet(host, 'http://127.0.0.1:6782/readyz').status === 200, 10_000, 200), 'ready again');
    assert.ok(host.links().some((l) => l.ifname === 'weave'), 'the router recreated the bridge');
    assert.ok(pods[0]!.ping(gw()), 'the pod is back on the bridge');
  });

  test('/readyz names what is missing: the VXLAN device, the iptables jump, and IPAM that cannot allocate', async () => {
    // no self-repair while the parts are missing; a restart puts them back
    await router.kill('SIGTERM');
    router.env = { WEFT_PROGRAM_MS: '60000' };
    await router.start();
    assert.deepEqual(readyz(), { status: 200, missing: [] });
    host.run('ip', ['link', 'del', 'vxlan-6784']);
    assert.deepEqual(readyz(), { status: 503, missing: ['VXLAN device vxlan-6784 is missing'] });
    await router.kill('SIGTERM');
    await router.start();
    assert.deepEqual(readyz(), { status: 200, missing: [] }, 'a starting router puts the VXLAN device back');
    // the jump into weft's chain, from whichever iptables backend holds it
    const backend = ['iptables-nft', 'iptables-legacy'].find((b) => host.run(`${b}-save`, []).includes('-A FORWARD -j WEFT-FORWARD'))!;
    assert.ok(backend, 'the router hooked WEFT-FORWARD into FORWARD');
    host.run(backend, ['-t', 'filter', '-D', 'FORWARD', '-j', 'WEFT-FORWARD']);
    const noRule = readyz();
    assert.equal(noRule.status, 503);
    assert.deepEqual(noRule.missing, ['iptables rules missing: filter/WEFT-FORWARD']);
    await router.kill('SIGTERM');
    await router.start();
    assert.deepEqual(readyz(), { status: 200, missing: [] }, 'and the jump');
    // a running router repairs both by itself, within seconds
    await router.kill('SIGTERM');
    router.env = { WEFT_PROGRAM_MS: '300' };
    await router.start();
    host.run('ip', ['link', 'del', 'vxlan-6784']);
    host.run(backend, ['-t', 'filter', '-D', 'FORWARD', '-j', 'WEFT-FORWARD']);
    assert.ok(await until(() => readyz().status === 200, 10_000, 200), `repaired: ${JSON.stringify(readyz())}`);
    assert.ok(host.links().some((l) => l.ifname === 'vxlan-6784'), 'the VXLAN device is back');
    assert.ok(host.run(`${backend}-save`, []).includes('-A FORWARD -j WEFT-FORWARD'), 'the jump is back');
    // IPAM that cannot allocate: a router waiting for a consensus of three that never comes
    const lone = Netns.create('wo-ipam');
    const waiting = new RouterProc(lone, ['--advertise-addr', '127.0.0.1', '--ipalloc-init', 'consensus=3']);
    try {
      await waiting.start();
      const r = httpGet(lone, 'http://127.0.0.1:6782/readyz');
      assert.equal(r.status, 503);
      assert.deepEqual(JSON.parse(r.body).missing, ['IPAM cannot allocate: awaiting consensus (quorum 2, 1 known)']);
    } finally {
      await waiting.destroy();
      lone.destroy();
    }
  });

  test('an idle router passes seldom, repairs when the kernel reports the change, and starts a monitor that dies again', async () => {
    await router.kill('SIGTERM');
    // passes every 500 ms while things change, stretching towards a minute while nothing does
    router.env = { WEFT_PROGRAM_MS: '500', WEFT_IDLE_PASS_MS: '60000' };
    const from = router.log.length;
    const passes = () => (router.log.slice(from).match(/"msg":"repair pass"/g) ?? []).length;
    await router.start();
    // quiet for 8 s: passes at about 0.5, 1.5, 3.5 and 7.5 s (16 at a fixed 500 ms), the next not before 15.5 s
    await new Promise((r) => setTimeout(r, 8000));
    const quiet = passes();
    assert.ok(quiet >= 2 && quiet <= 6, `${quiet} repair passes in 8 quiet seconds`);
    host.run('ip', ['link', 'del', 'vxlan-6784']);
    assert.ok(
      await until(() => host.links().some((l) => l.ifname === 'vxlan-6784'), 4000, 100),
      `the VXLAN device is back within 4 s of its removal: ${router.log.split('\n').slice(-5).join('\n')}`,
    );
    // the monitors are the router's children; one killed is started again, and reports again
    const monitor = () => Number(spawnSync('pgrep', ['-P', String(router.pid), '-f', 'ip -o monitor']).stdout.toString().trim().split('\n')[0] || 0);
    const first = monitor();
    assert.ok(first > 0, 'the router runs `ip -o monitor`');
    process.kill(first, 'SIGKILL');
    assert.ok(await until(() => monitor() > 0 && monitor() !== first, 5000, 100), 'a new monitor within 5 s');
    assert.match(router.log.slice(from), /kernel monitor ended/);
    await new Promise((r) => setTimeout(r, 8000));
    host.run('ip', ['link', 'del', 'vxlan-6784']);
    assert.ok(await until(() => host.links().some((l) => l.ifname === 'vxlan-6784'), 4000, 100), 'and the new one reports removals too');
    // a router killed with -9 takes its monitors with it (they would keep the namespace alive)
    const all = spawnSync('pgrep', ['-P', String(router.pid), '-f', 'monitor']).stdout.toString().trim().split('\n').map(Number);
    assert.equal(all.length, 3, 'ip, bridge and nft monitors');
    await router.kill('SIGKILL');
    assert.ok(await until(() => all.every((pid) => !existsSync(`/proc/${pid}`)), 5000, 100), 'no monitor outlives its router');
    await router.start();
  });

  test('expose and hide add and remove host addresses; bad arguments and a stopped router are clear errors', async () => {
    const ex = weftCli(router.socket, ['expose', '10.0.9.100/24']);
    assert.equal(ex.code, 0, ex.err);
    assert.ok(host.addrs('weave').includes('10.0.9.100/24'));
    const hide = weftCli(router.socket, ['hide', '10.0.9.100/24']);
    assert.equal(hide.code, 0, hide.err);
    assert.ok(!host.addrs('weave').includes('10.0.9.100/24'));
    const gw = weftCli(router.socket, ['expose']);
    assert.equal(gw.code, 0);
    assert.match(gw.out, /^10\.\d+\.\d+\.\d+\/12$/m);
    const hideGw = weftCli(router.socket, ['hide', gw.out.trim()]);
    assert.equal(hideGw.code, 1);
    assert.match(hideGw.err, /gateway/);
    for (const [args, re] of [
      [['expose', 'nonsense'], /ADDRESS\/PREFIX/],
      [['connect'], /at least one address/],
      [['connect', 'bad host!'], /HOST or HOST:PORT/],
      [['status', 'bogus'], /unknown part/],
      [['rmpeer'], /exactly one peer/],
      [['rmpeer', 'nobody'], /no peer named/],
      [['forget', '10.9.9.9'], /not a target/],
    ] as const) {
      const r = weftCli(router.socket, [...args]);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.out}`);
      assert.match(r.err, re, args.join(' '));
    }
    for (const cmd of ['status', 'ps', 'report', 'connect', 'forget', 'rmpeer', 'expose', 'hide', 'router']) {
      const h = weftCli(router.socket, [cmd, '--help']);
      assert.equal(h.code, 0, cmd);
      assert.match(h.out, /Usage: weft/);
      assert.match(h.out, /Example/);
    }
    const down = weftCli('/nonexistent/weft.sock', ['status']);
    assert.equal(down.code, 1);
    assert.match(down.err, /is `weft router` running\?/);
  });

  test('connect reports the target and status shows it retrying; forget removes it', () => {
    const c = weftCli(router.socket, ['connect', '192.0.2.55']);
    assert.equal(c.code, 0);
    assert.match(c.out, /connecting to 192\.0\.2\.55/);
    assert.match(weftCli(router.socket, ['status', 'targets']).out, /192\.0\.2\.55:6783/);
    const f = weftCli(router.socket, ['forget', '192.0.2.55']);
    assert.equal(f.code, 0);
    assert.doesNotMatch(weftCli(router.socket, ['status', 'targets']).out, /192\.0\.2\.55/);
  });
});

describe('weft router refusals', { skip: needs({ built: true }) }, () => {
  test('a password file that is missing or empty is refused naming --password-file, before anything is made', () => {
    const dir = mkdtempSync(join(tmpdir(), 'weft-pw-'));
    try {
      const state = join(dir, 'state');
      writeFileSync(join(dir, 'empty'), '\n');
      for (const [file, why] of [
        [join(dir, 'missing'), /--password-file: cannot read .*ENOENT/],
        [join(dir, 'empty'), /--password-file: .* is empty/],
      ] as [string, RegExp][]) {
        const r = spawnSync(WEFT, ['router', '--state-dir', state, '--socket', join(dir, 'weft.sock'), '--password-file', file], { encoding: 'utf8', timeout: 30_000 });
        assert.equal(r.status, 1, r.stderr);
        assert.match(r.stderr, why);
        assert.ok(!existsSync(state), 'no state directory made');
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
