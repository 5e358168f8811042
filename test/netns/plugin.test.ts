/**
 * The real dist/weft-net against a real router, all inside namespaces this file creates:
 * one "host" netns running the router, one netns per pod.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { cni, cniEnv, netConf, Netns, RouterProc, until } from '../helpers/netns';
import { needs, NETNS } from '../helpers/needs';
import { mapPool } from '../../src/sandbox';

const readlinkOr = (p: string) => {
  try {
    return readlinkSync(p);
  } catch {
    return undefined;
  }
};

const skip = needs({ ...NETNS, tools: [...NETNS.tools!, 'iptables-nft-save', 'iptables-legacy-save', 'unshare'] });

describe('weft-net on one host', { skip, concurrency: false }, () => {
  let host: Netns;
  let router: RouterProc;
  const pods: Netns[] = [];
  const pod = (p: string) => {
    const ns = Netns.create(p);
    pods.push(ns);
    return ns;
  };
  const conf = (extra: Record<string, unknown> = {}, v = '1.0.0') => netConf(router.socket, extra, v);
  const podAllocs = () => router.report().ipam.attachments.filter((a: any) => a.network !== '_gateway');
  const vethsOnHost = () => host.links().filter((l) => l.ifname.startsWith('vethwe'));

  before(async () => {
    host = Netns.create('wt-h');
    router = new RouterProc(host);
    await router.start();
  });
  after(async () => {
    await router?.destroy();
    for (const p of pods) p.destroy();
    host?.destroy();
  });

  test('ADD: two pods reach each other and the bridge; result is a valid 1.0.0 result', () => {
    const a = pod('wt-a');
    const b = pod('wt-b');
    const ra = cni(host, cniEnv('ADD', 'pod-a', a.path), conf());
    const rb = cni(host, cniEnv('ADD', 'pod-b', b.path), conf());
    assert.equal(ra.code, 0, ra.stdout + ra.stderr);
    assert.equal(rb.code, 0, rb.stdout + rb.stderr);
    const r = ra.json;
    assert.equal(r.cniVersion, '1.0.0');
    assert.equal(r.interfaces.length, 3);
    assert.equal(r.interfaces[0].name, 'weave');
    assert.match(r.interfaces[1].name, /^vethwe[0-9a-f]{9}$/);
    assert.equal(r.interfaces[2].name, 'eth0');
    assert.equal(r.interfaces[2].sandbox, a.path);
    assert.equal(r.ips.length, 1);
    assert.equal(r.ips[0].interface, 2);
    assert.match(r.ips[0].address, /^10\.(3[2-9]|4[0-7])\.\d+\.\d+\/12$/);
    assert.deepEqual(r.routes, [{ dst: '0.0.0.0/0', gw: r.ips[0].gateway }]);
    assert.equal(r.ips[0].version, undefined);

    // what the result says is what is there
    const eth0 = a.links().find((l) => l.ifname === 'eth0')!;
    assert.equal(eth0.address, r.interfaces[2].mac);
    assert.equal(eth0.mtu, r.interfaces[2].mtu);
    assert.deepEqual(a.addrs('eth0'), [r.ips[0].address]);
    const hostEnd = host.links().find((l) => l.ifname === r.interfaces[1].name) as any;
    assert.equal(hostEnd.master, 'weave');
    assert.equal(hostEnd.linkinfo.info_slave_data.hairpin, true);
    assert.ok(host.addrs('weave').includes(`${r.ips[0].gateway}/12`), 'bridge holds the gateway address');

    const addrB = rb.json.ips[0].address.split('/')[0];
    assert.notEqual(addrB, r.ips[0].address.split('/')[0]);
    assert.ok(a.ping(addrB), 'pod a pings pod b');
    assert.ok(b.ping(r.ips[0].address.split('/')[0]), 'pod b pings pod a');
    assert.ok(a.ping(r.ips[0].gateway), 'pod pings the bridge');
    assert.ok(host.ping(addrB), 'host reaches the pod');
  });

  test('ADD with a 0.4.0 config prints a 0.4.0 result; CHECK passes, and fails once the address is gone', () => {
    const p = pod('wt-c');
    const add = cni(host, cniEnv('ADD', 'pod-c', p.path), conf({}, '0.4.0'));
    assert.equal(add.code, 0, add.stdout);
    assert.equal(add.json.cniVersion, '0.4.0');
    assert.equal(add.json.ips[0].version, '4');
    assert.equal('mtu' in add.json.interfaces[2], false);
    const chk = cni(host, cniEnv('CHECK', 'pod-c', p.path), conf({ prevResult: add.json }, '0.4.0'));
    assert.equal(chk.code, 0, chk.stdout);
    p.run('ip', ['addr', 'flush', 'dev', 'eth0']);
    const bad = cni(host, cniEnv('CHECK', 'pod-c', p.path), conf({ prevResult: add.json }, '0.4.0'));
    assert.equal(bad.json.code, 103, 'CHECK found the attachment changed');
    assert.match(bad.json.msg, /address 10\.\d+\.\d+\.\d+\/12 .*missing on eth0/);
    const noPrev = cni(host, cniEnv('CHECK', 'pod-c', p.path), conf({}, '0.4.0'));
    assert.equal(noPrev.json.code, 7);
    assert.match(noPrev.json.msg, /prevResult/);
  });

  test('logs go to the configured file as one JSON event per line, never to stdout', () => {
    const { mkdtempSync, readFileSync, rmSync } = require('node:fs') as typeof import('node:fs');
    const dir = mkdtempSync('/tmp/weft-log-');
    try {
      const p = pod('wt-log');
      const file = `${dir}/plugin.log`;
      const r = cni(host, cniEnv('ADD', 'pod-log', p.path), conf({ logLevel: 'debug', logFile: file }));
      assert.equal(r.code, 0);
      assert.doesNotThrow(() => JSON.parse(r.stdout), 'stdout is the result alone');
      const lines = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      const add = lines.find((l) => l.msg === 'ADD');
      assert.ok(add, 'an ADD event');
      assert.equal(add.containerId, 'pod-log');
      assert.equal(add.level, 30);
      assert.equal(r.stderr, '', 'nothing on stderr when logging to a file');
      assert.equal(cni(host, cniEnv('DEL', 'pod-log', p.path), conf({ logLevel: 'debug', logFile: file })).code, 0);
      assert.ok(readFileSync(file, 'utf8').includes('"msg":"DEL"'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('CHECK notices a veth taken off the bridge', () => {
    const p = pod('wt-k');
    const add = cni(host, cniEnv('ADD', 'pod-k', p.path), conf());
    assert.equal(add.code, 0);
    assert.equal(cni(host, cniEnv('CHECK', 'pod-k', p.path), conf({ prevResult: add.json })).code, 0);
    host.run('ip', ['link', 'set', add.json.interfaces[1].name, 'nomaster']);
    const bad = cni(host, cniEnv('CHECK', 'pod-k', p.path), conf({ prevResult: add.json }));
    assert.equal(bad.json.code, 103);
    assert.match(bad.json.msg, /not attached to weave/);
  });

  test('a MAC asked for with MAC= or runtimeConfig.mac is the interface\'s, in the result and in weft ps; a bad one is refused by name', () => {
    const viaArgs = pod('wt-mac1');
    const viaConf = pod('wt-mac2');
    const a = cni(host, cniEnv('ADD', 'mac-1', viaArgs.path, 'eth0', { CNI_ARGS: 'IgnoreUnknown=1;MAC=02:AB:CD:00:00:01' }), conf());
    const b = cni(host, cniEnv('ADD', 'mac-2', viaConf.path), conf({ runtimeConfig: { mac: '02:ab:cd:00:00:02' } }));
    for (const [r, ns, id, mac] of [
      [a, viaArgs, 'mac-1', '02:ab:cd:00:00:01'],
      [b, viaConf, 'mac-2', '02:ab:cd:00:00:02'],
    ] as const) {
      assert.equal(r.code, 0, r.stdout);
      assert.equal(ns.links().find((l) => l.ifname === 'eth0')!.address, mac, 'on the interface');
      assert.equal(r.json.interfaces[2].mac, mac, 'in the result');
      assert.equal(podAllocs().find((x: any) => x.containerId === id)?.mac, mac, "in the router's records");
    }
    const bad = pod('wt-mac3');
    const before = vethsOnHost().length;
    const r = cni(host, cniEnv('ADD', 'mac-3', bad.path), conf({ runtimeConfig: { mac: 'not-a-mac' } }));
    assert.equal(r.json.code, 7);
    assert.match(r.json.msg, /^runtimeConfig\.mac: /);
    assert.equal(vethsOnHost().length, before, 'nothing made');
  });

  test('plugin fields: mtu below the router\'s is the interface\'s, hairpinMode false turns hairpin off', () => {
    const p = pod('wt-mtu');
    const routerMtu = router.report().router.mtu as number;
    const r = cni(host, cniEnv('ADD', 'pod-mtu', p.path), conf({ mtu: routerMtu - 100, hairpinMode: false }));
    assert.equal(r.code, 0, r.stdout);
    assert.equal(p.links().find((l) => l.ifname === 'eth0')!.mtu, routerMtu - 100);
    assert.equal(r.json.interfaces[2].mtu, routerMtu - 100);
    const hostEnd = host.links().find((l) => l.ifname === r.json.interfaces[1].name) as any;
    assert.equal(hostEnd.linkinfo.info_slave_data.hairpin, false);
  });

  test('CNI_NETNS as /proc/PID/ns/net works', async () => {
    const child = spawn('unshare', ['--net', 'sleep', '30'], { stdio: 'ignore' });
    try {
      const nsPath = `/proc/${child.pid}/ns/net`;
      // unshare has made its namespace once the link differs from ours (it then execs sleep)
      const ours = readlinkSync('/proc/self/ns/net');
      assert.ok(await until(() => readlinkOr(nsPath) !== ours && readlinkOr(nsPath) !== undefined, 10_000, 20), 'unshare made a namespace');
      const add = cni(host, cniEnv('ADD', 'pod-proc', nsPath), conf());
      assert.equal(add.code, 0, add.stdout);
      const addr = add.json.ips[0].address.split('/')[0];
      assert.ok(host.ping(addr), 'host pings the pod in a /proc netns');
      assert.equal(cni(host, cniEnv('DEL', 'pod-proc', nsPath), conf()).code, 0);
    } finally {
      child.kill('SIGKILL');
    }
  });

  test('DEL is idempotent: repeated, empty netns, vanished netns, unknown container; it releases what was held', async () => {
    const p = pod('wt-d');
    const add = cni(host, cniEnv('ADD', 'pod-d', p.path), conf());
    assert.equal(add.code, 0);
    const veth = add.json.interfaces[1].name;
    assert.ok(podAllocs().some((x: any) => x.containerId === 'pod-d'));
    assert.equal(cni(host, cniEnv('DEL', 'pod-d', p.path), conf()).code, 0);
    assert.equal(cni(host, cniEnv('DEL', 'pod-d', p.path), conf()).code, 0, 'second DEL');
    assert.ok(!podAllocs().some((x: any) => x.containerId === 'pod-d'), 'allocation released');
    // the router finishes the deletion in the background (it is off the wire already)
    assert.ok(await until(() => !vethsOnHost().some((l) => l.ifname === veth), 10_000), 'veth gone');

    const q = pod('wt-e');
    assert.equal(cni(host, cniEnv('ADD', 'pod-e', q.path), conf()).code, 0);
    assert.equal(cni(host, cniEnv('DEL', 'pod-e', ''), conf()).code, 0, 'DEL with an empty netns');
    assert.ok(!podAllocs().some((x: any) => x.containerId === 'pod-e'));

    const r = pod('wt-f');
    assert.equal(cni(host, cniEnv('ADD', 'pod-f', r.path), conf()).code, 0);
    r.destroy();
    assert.equal(cni(host, cniEnv('DEL', 'pod-f', r.path), conf()).code, 0, 'DEL with a vanished netns');
    assert.ok(!podAllocs().some((x: any) => x.containerId === 'pod-f'));

    assert.equal(cni(host, cniEnv('DEL', 'never-added', '/var/run/netns/none'), conf()).code, 0, 'DEL of an unknown container');
  });

  test('explicit addresses from IP=, args.cni.ips and runtimeConfig.ips; a taken address is refused', () => {
    const p1 = pod('wt-i1');
    const r1 = cni(host, cniEnv('ADD', 'ip-1', p1.path, 'eth0', { CNI_ARGS: 'IgnoreUnknown=1;IP=10.32.7.7' }), conf());
    assert.equal(r1.code, 0, r1.stdout);
    assert.equal(r1.json.ips[0].address, '10.32.7.7/12');
    const p2 = pod('wt-i2');
    const r2 = cni(host, cniEnv('ADD', 'ip-2', p2.path), conf({ args: { cni: { ips: ['10.32.7.8/12'] } } }));
    assert.equal(r2.json.ips[0].address, '10.32.7.8/12');
    const p3 = pod('wt-i3');
    const r3 = cni(host, cniEnv('ADD', 'ip-3', p3.path), conf({ runtimeConfig: { IPs: ['10.32.7.9/12'] } }));
    assert.equal(r3.json.ips[0].address, '10.32.7.9/12');
    assert.ok(p1.ping('10.32.7.9'));
    const p4 = pod('wt-i4');
    const before = vethsOnHost().length;
    const dup = cni(host, cniEnv('ADD', 'ip-4', p4.path, 'eth0', { CNI_ARGS: 'IP=10.32.7.7/12' }), conf());
    assert.equal(dup.json.code, 101);
    assert.match(dup.json.msg, /10\.32\.7\.7 is already held by ip-1/);
    assert.equal(vethsOnHost().length, before, 'no stray veth');
    assert.ok(!podAllocs().some((x: any) => x.containerId === 'ip-4'), 'no allocation left');
    assert.equal(p4.links().filter((l) => l.ifname === 'eth0').length, 0);
  });

  test('ipam.subnet and explicit subnets: pods get addresses there; different subnets cannot talk', () => {
    const s1 = pod('wt-s1');
    const s2 = pod('wt-s2');
    const o1 = pod('wt-s3');
    const r1 = cni(host, cniEnv('ADD', 'sub-1', s1.path), conf({ ipam: { subnet: '10.32.1.0/24' } }));
    const r2 = cni(host, cniEnv('ADD', 'sub-2', s2.path), conf({ ipam: { subnet: '10.32.1.0/24' } }));
    const r3 = cni(host, cniEnv('ADD', 'sub-3', o1.path), conf({ ipam: { subnet: '10.32.2.0/24' } }));
    for (const r of [r1, r2, r3]) assert.equal(r.code, 0, r.stdout);
    assert.match(r1.json.ips[0].address, /^10\.32\.1\.\d+\/24$/);
    assert.equal(r1.json.ips[0].gateway, '10.32.1.1');
    assert.match(r3.json.ips[0].address, /^10\.32\.2\.\d+\/24$/);
    const a2 = r2.json.ips[0].address.split('/')[0];
    const a3 = r3.json.ips[0].address.split('/')[0];
    assert.ok(s1.ping(a2), 'same subnet: reachable');
    assert.ok(!s1.ping(a3), 'other subnet: unreachable');
    // the seeds' explicit subnet outside the range: no gateway, reachable only within it
    const e1 = pod('wt-e1');
    const e2 = pod('wt-e2');
    const x1 = cni(host, cniEnv('ADD', 'ext-1', e1.path, 'eth0', { CNI_ARGS: 'IP=10.0.1.1/24' }), conf());
    const x2 = cni(host, cniEnv('ADD', 'ext-2', e2.path, 'eth0', { CNI_ARGS: 'IP=10.0.1.2/24' }), conf());
    assert.equal(x1.json.ips[0].address, '10.0.1.1/24');
    assert.equal(x1.json.ips[0].gateway, undefined);
    assert.deepEqual(x1.json.routes, []);
    assert.ok(e1.ping('10.0.1.2'));
    assert.ok(!e1.ping(a2));
    assert.equal(x2.code, 0);
  });

  test('CNI 1.0 rule: ADD fails when the interface name exists in the netns, leaving nothing behind', () => {
    const p = pod('wt-x');
    p.run('ip', ['link', 'add', 'eth0', 'type', 'bridge']);
    const before = vethsOnHost().length;
    const r = cni(host, cniEnv('ADD', 'pod-x', p.path), conf());
    assert.equal(r.json.code, 102);
    assert.match(r.json.msg, /eth0 already exists/);
    assert.equal(vethsOnHost().length, before);
    assert.ok(!podAllocs().some((x: any) => x.containerId === 'pod-x'));
  });

  test('GC releases every allocation of the network not listed, and their veths', () => {
    const ids = ['gc-1', 'gc-2', 'gc-3'];
    const results = ids.map((id) => cni(host, cniEnv('ADD', id, pod('wt-g').path), conf({}, '1.1.0')));
    results.forEach((r) => assert.equal(r.code, 0));
    const other = cni(host, cniEnv('ADD', 'gc-other', pod('wt-g').path), { ...conf({}, '1.1.0'), name: 'othernet' });
    assert.equal(other.code, 0);
    const keepAll = podAllocs()
      .filter((a: any) => a.network === 'weftnet' && !ids.slice(1).includes(a.containerId))
      .map((a: any) => ({ containerID: a.containerId, ifname: a.ifname }));
    const gc = cni(host, { CNI_COMMAND: 'GC', CNI_CONTAINERID: '', CNI_NETNS: '', CNI_IFNAME: '' }, conf({ 'cni.dev/valid-attachments': keepAll }, '1.1.0'));
    assert.equal(gc.code, 0, gc.stdout);
    const left = podAllocs().map((a: any) => a.containerId);
    assert.ok(left.includes('gc-1'));
    assert.ok(!left.includes('gc-2') && !left.includes('gc-3'));
    assert.ok(left.includes('gc-other'), 'other networks untouched');
    const names = host.links().map((l) => l.ifname);
    assert.ok(!names.includes(results[1]!.json.interfaces[1].name));
    assert.ok(names.includes(results[0]!.json.interfaces[1].name));
    // the older attachment key is accepted too
    const gc2 = cni(host, { CNI_COMMAND: 'GC' }, conf({ 'cni.dev/attachments': [] }, '1.1.0'));
    assert.equal(gc2.code, 0);
    assert.ok(!podAllocs().some((a: any) => a.network === 'weftnet'));
  });

  test('DEL takes the pod off the wire before it answers; an ADD of the same attachment right after gets a working pod', async () => {
    const p = pod('wt-z');
    const first = cni(host, cniEnv('ADD', 'pod-z', p.path), conf());
    assert.equal(first.code, 0, first.stdout);
    const addr = first.json.ips[0].address.split('/')[0];
    assert.ok(host.ping(addr), 'reachable after ADD');
    assert.equal(cni(host, cniEnv('DEL', 'pod-z', p.path), conf()).code, 0);
    assert.ok(!host.ping(addr), 'unreachable as soon as DEL has answered');
    // the same key at once: the router first finishes deleting the old pair (same names)
    const again = cni(host, cniEnv('ADD', 'pod-z', p.path), conf());
    assert.equal(again.code, 0, again.stdout);
    assert.deepEqual(p.addrs('eth0'), [again.json.ips[0].address]);
    assert.ok(p.ping(again.json.ips[0].gateway), 'the new pod reaches its gateway');
    assert.equal(cni(host, cniEnv('DEL', 'pod-z', p.path), conf()).code, 0);
  });

  test('WEFT_TRACE=1: one JSON line on stderr with the plugin marks and the router steps, stdout untouched', () => {
    const p = pod('wt-t');
    const add = cni(host, cniEnv('ADD', 'pod-t', p.path, 'eth0', { WEFT_TRACE: '1' }), conf());
    assert.equal(add.code, 0, add.stdout + add.stderr);
    assert.equal(add.json.ips.length, 1, 'stdout is the result');
    const t = JSON.parse(add.stderr.trim().split('\n').pop()!).weftTrace;
    assert.equal(t.verb, 'ADD');
    for (const m of ['main', 'parsed', 'request', 'answer', 'end']) assert.equal(typeof t.marks[m], 'number', `mark ${m}`);
    assert.ok(t.marks.main <= t.marks.parsed && t.marks.parsed <= t.marks.request && t.marks.request <= t.marks.answer);
    for (const s of ['allocate', 'fsync', 'hostLink', 'podLink', 'total']) assert.equal(typeof t.router[s], 'number', `router step ${s}`);
    const del = cni(host, cniEnv('DEL', 'pod-t', p.path, 'eth0', { WEFT_TRACE: '1' }), conf());
    assert.equal(del.code, 0);
    const d = JSON.parse(del.stderr.trim()).weftTrace;
    assert.equal(d.verb, 'DEL');
    assert.equal(typeof d.router.release, 'number');
    assert.equal(cni(host, cniEnv('DEL', 'pod-t', p.path), conf()).stderr, '', 'no trace without WEFT_TRACE');
  });

  test('STATUS succeeds while the router answers', () => {
    const r = cni(host, { CNI_COMMAND: 'STATUS' }, conf({}, '1.1.0'));
    assert.equal(r.code, 0, r.stdout);
    assert.equal(r.stdout, '');
  });

  test('masquerade: pod egress leaves with the host address; weft chains are installed once', async () => {
    const out = Netns.create('wt-out');
    pods.push(out);
    host.run('ip', ['link', 'add', 'wt-up0', 'type', 'veth', 'peer', 'name', 'wt-up1', 'netns', out.path]);
    host.run('ip', ['addr', 'add', '198.51.100.1/24', 'dev', 'wt-up0']);
    host.run('ip', ['link', 'set', 'wt-up0', 'up']);
    out.run('ip', ['addr', 'add', '198.51.100.2/24', 'dev', 'wt-up1']);
    out.run('ip', ['link', 'set', 'wt-up1', 'up']);
    const p = pod('wt-m');
    const r = cni(host, cniEnv('ADD', 'pod-m', p.path), conf());
    assert.equal(r.code, 0);
    // the outside has no route back to the pod range: only a masqueraded ping gets an answer
    assert.ok(p.ping('198.51.100.2'), 'pod reaches the outside through masquerade');
    await router.kill('SIGTERM');
    await router.start();
    assert.ok(p.ping('198.51.100.2'), 'still after a router restart');
    const save = host.run('iptables-nft-save', []) + host.run('iptables-legacy-save', []);
    assert.equal(save.split('\n').filter((l) => l === '-A POSTROUTING -j WEFT-POSTROUTING').length, 1);
    assert.equal(save.split('\n').filter((l) => l === '-A FORWARD -j WEFT-FORWARD').length, 1);
  });
});

describe('router restarts, crashes and absence', { skip, concurrency: false }, () => {
  let host: Netns;
  const pods: Netns[] = [];
  after(() => {
    for (const p of pods) p.destroy();
    host?.destroy();
  });

  test('router down: ADD fails at once with code 11; DEL succeeds and the release lands when the router is back', async () => {
    host = Netns.create('wt-r');
    const router = new RouterProc(host);
    try {
      await router.start();
      const p = Netns.create('wt-rp');
      pods.push(p);
      const conf = netConf(router.socket);
      const add = cni(host, cniEnv('ADD', 'pod-r', p.path), conf);
      assert.equal(add.code, 0);
      await router.kill('SIGKILL');
      const q = Netns.create('wt-rq');
      pods.push(q);
      const down = cni(host, cniEnv('ADD', 'pod-q', q.path), conf);
      assert.equal(down.json.code, 11);
      // at once: the connection was refused; no deadline had to run out
      assert.match(down.json.msg, /unreachable: connect ECONNREFUSED/);
      assert.doesNotMatch(down.json.msg, /did not answer/);
      assert.equal(q.links().filter((l) => l.ifname === 'eth0').length, 0);
      const del = cni(host, cniEnv('DEL', 'pod-r', p.path), conf);
      assert.equal(del.code, 0, del.stdout);
      const spool = join(router.stateDir, 'pending-release');
      assert.equal(readdirSync(spool).filter((f) => f.endsWith('.json')).length, 1, 'release recorded durably');
      await router.start();
      const left = router.report().ipam.attachments.filter((a: any) => a.containerId === 'pod-r');
      assert.deepEqual(left, [], 'router applied the recorded release');
      assert.equal(readdirSync(spool).length, 0);
      const st = cni(host, { CNI_COMMAND: 'STATUS' }, { ...conf, cniVersion: '1.1.0' });
      assert.equal(st.code, 0);
    } finally {
      await router.destroy();
    }
  });

  test('50 concurrent ADDs: 50 distinct working addresses; 50 DELs leave no veth, allocation or file', async () => {
    const h = Netns.create('wt-c');
    const router = new RouterProc(h);
    const ps: Netns[] = [];
    try {
      await router.start();
      const conf = netConf(router.socket);
      for (let i = 0; i < 50; i++) ps.push(Netns.create(`wt-c${i}`));
      const { cniAsync } = await import('../helpers/netns');
      const adds = await Promise.all(ps.map((p, i) => cniAsync(h, cniEnv('ADD', `conc-${i}`, p.path), conf)));
      adds.forEach((r, i) => assert.equal(r.code, 0, `ADD ${i}: ${r.stdout}`));
      const addrs = adds.map((r) => r.json.ips[0].address);
      assert.equal(new Set(addrs).size, 50, 'distinct addresses');
      const gw = adds[0]!.json.ips[0].gateway;
      ps.forEach((p, i) => assert.ok(p.ping(gw), `pod ${i} reaches the bridge`));
      assert.ok(ps[0]!.ping(addrs[49]!.split('/')[0]), 'first pod reaches the last');
      const dels = await Promise.all(ps.map((p, i) => cniAsync(h, cniEnv('DEL', `conc-${i}`, p.path), conf)));
      dels.forEach((r, i) => assert.equal(r.code, 0, `DEL ${i}: ${r.stdout}`));
      assert.ok(await until(() => h.links().every((l) => !l.ifname.startsWith('vethwe')), 20_000), 'every host veth deleted');
      assert.deepEqual(router.report().ipam.attachments.filter((a: any) => a.network !== '_gateway'), []);
      assert.deepEqual(readdirSync(router.stateDir).sort(), ['ipam.json', 'peer-name']);
      assert.ok(!existsSync(join(router.stateDir, 'pending-release')) || readdirSync(join(router.stateDir, 'pending-release')).length === 0);
    } finally {
      await router.destroy();
      ps.forEach((p) => p.destroy());
      h.destroy();
    }
  });

  test('kill -9 during 50 concurrent ADDs: after restart no address is held twice, and every ADD that succeeded is kept', async (t) => {
    const h = Netns.create('wt-k9');
    const router = new RouterProc(h);
    const ps: Netns[] = [];
    try {
      await router.start();
      const conf = netConf(router.socket);
      for (let i = 0; i < 50; i++) ps.push(Netns.create(`wt-k${i}`));
      const { cniAsync } = await import('../helpers/netns');
      let answered = 0;
      // ten in flight at a time, so answers come in waves (one group commit answers a whole
      // wave at once); the kill lands after the first wave, with the next ones in flight
      const pending = mapPool(ps, 10, (p, i) =>
        cniAsync(h, cniEnv('ADD', `k9-${i}`, p.path), conf).then((r) => {
          if (r.code === 0) answered++;
          return r;
        }),
      );
      assert.ok(await until(() => answered > 0, 60_000, 5), 'a first ADD succeeded');
      await router.kill('SIGKILL');
      const first = await pending;
      const ok = first.filter((r) => r.code === 0);
      const failed = first.filter((r) => r.code !== 0);
      t.diagnostic(`${ok.length} ADDs succeeded, ${failed.length} failed`);
      assert.ok(ok.length > 0 && failed.length > 0, `the kill fell inside the storm: ${ok.length} ADDs succeeded, ${failed.length} failed`);
      failed.forEach((r) => assert.equal(r.json?.code, 11, r.stdout));
      await router.start();
      const held = router.report().ipam.attachments;
      const addrs = held.map((a: any) => a.address);
      assert.equal(new Set(addrs).size, addrs.length, 'no address held twice');
      for (const r of ok) assert.ok(addrs.includes(r.json.ips[0].address), `${r.json.ips[0].address} kept`);
      // the runtime retries what failed; every pod then has its own address
      const retry = await Promise.all(ps.map((p, i) => (first[i]!.code === 0 ? first[i]! : cniAsync(h, cniEnv('ADD', `k9-${i}`, p.path), conf))));
      retry.forEach((r, i) => assert.equal(r.code, 0, `retry ${i}: ${r.stdout}`));
      const live = ps.map((p) => p.addrs('eth0')[0]);
      assert.equal(new Set(live).size, 50, 'fifty pods, fifty addresses on the wire');
    } finally {
      await router.destroy();
      ps.forEach((p) => p.destroy());
      h.destroy();
    }
  });

  test('a starting router deletes host veths no allocation owns (a crash between DEL and the deletion) and keeps its pods\' ones', async () => {
    const h = Netns.create('wt-sw');
    const router = new RouterProc(h);
    const p = Netns.create('wt-swp');
    try {
      await router.start();
      const conf = netConf(router.socket);
      const add = cni(h, cniEnv('ADD', 'pod-sw', p.path), conf);
      assert.equal(add.code, 0, add.stdout);
      const kept = add.json.interfaces[1].name;
      await router.kill('SIGKILL');
      // what a router killed after answering a DEL leaves: a host end down, its allocation gone
      h.run('ip', ['link', 'add', 'vethwe0123456ab', 'type', 'veth', 'peer', 'name', 'wt-sw-peer']);
      h.run('ip', ['link', 'add', 'vethother0', 'type', 'veth', 'peer', 'name', 'wt-sw-peer2']);
      await router.start();
      const names = () => h.links().map((l) => l.ifname);
      assert.ok(await until(() => !names().includes('vethwe0123456ab'), 10_000), 'stale host end deleted');
      assert.ok(names().includes(kept), 'the pod keeps its veth');
      assert.ok(names().includes('vethother0'), 'links that are not weft host ends are left alone');
      assert.ok(p.ping(add.json.ips[0].gateway), 'the pod still works');
    } finally {
      await router.destroy();
      p.destroy();
      h.destroy();
    }
  });

  test('iptables-legacy hosts get the same chains; a restart does not duplicate them', async () => {
    const h = Netns.create('wt-l');
    const env = process.env.WEFT_IPTABLES;
    process.env.WEFT_IPTABLES = 'legacy';
    const router = new RouterProc(h);
    try {
      await router.start();
      await router.kill('SIGTERM');
      await router.start();
      const save = h.run('iptables-legacy-save', []);
      assert.equal(save.split('\n').filter((l) => l === '-A POSTROUTING -j WEFT-POSTROUTING').length, 1);
      assert.equal(save.split('\n').filter((l) => l.startsWith('-A WEFT-POSTROUTING')).length, 3);
      assert.equal(h.run('iptables-nft-save', []).includes('WEFT'), false, 'nothing on the other backend');
    } finally {
      if (env === undefined) delete process.env.WEFT_IPTABLES;
      else process.env.WEFT_IPTABLES = env;
      await router.destroy();
      h.destroy();
    }
  });
});
