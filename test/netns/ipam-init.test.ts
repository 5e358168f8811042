/**
 * How the ring gets its first owners (--ipalloc-init), allocation that never hangs, and rmpeer:
 * two routers in namespaces of the test's own, joined by a veth pair.
 */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { cni, cniEnv, netConf, Netns, RouterProc, scope, underlayHosts, until, weftCli } from '../helpers/netns';
import { needs, NETNS } from '../helpers/needs';

const skip = needs(NETNS);
const A = '02:0a:00:00:00:01';
const B = '02:0b:00:00:00:02';
const FAST = { WEFT_HEARTBEAT_MS: '300', WEFT_RETRY_MIN_MS: '200', WEFT_RETRY_MAX_MS: '1000', WEFT_SPACE_TIMEOUT_MS: '1500' };

function hosts(tag: string, n: number, track: (x: Netns) => Netns): Netns[] {
  return underlayHosts(`wi${tag}`, n, '172.31.9', track);
}

function router(ns: Netns, addr: string, args: string[]): RouterProc {
  const r = new RouterProc(ns, ['--advertise-addr', addr, ...args]);
  r.env = FAST;
  return r;
}

const owners = (r: RouterProc) => Object.fromEntries(r.report().ipam.owners.map((o: any) => [o.peer, o.size]));

describe('--ipalloc-init and rmpeer', { skip, concurrency: false, timeout: 120_000 }, () => {
  const { track, cleanup } = scope();
  after(cleanup);

  test('alone with consensus=3: ADD fails with code 11 within the deadline, and status says why', async () => {
    const h = track(Netns.create('wi-solo'));
    const p = track(Netns.create('wi-solop'));
    const r = track(router(h, '127.0.0.1', ['--ipalloc-init', 'consensus=3']));
    await r.start();
    const add = cni(h, cniEnv('ADD', 'solo', p.path), netConf(r.socket));
    assert.equal(add.json.code, 11, add.stdout);
    // no hang: the router's own deadline (WEFT_SPACE_TIMEOUT_MS) ended the wait, and says why
    assert.match(add.json.msg, /^no address within the deadline: awaiting consensus \(quorum 2, 1 known\)/);
    assert.match(weftCli(r.socket, ['status']).out, /Status: awaiting consensus \(quorum 2, 1 known\)/);
    const st = cni(h, { CNI_COMMAND: 'STATUS' }, netConf(r.socket, {}, '1.1.0'));
    assert.equal(st.json.code, 50);
    assert.equal(p.links().filter((l) => l.ifname === 'eth0').length, 0, 'nothing half-made');
  });

  test('consensus=2 across two routers: they agree and split the range', async () => {
    const [ha, hb] = hosts('c', 2, track) as [Netns, Netns];
    const ra = track(router(ha, '172.31.9.1', ['--name', A, '--ipalloc-init', 'consensus=2']));
    const rb = track(router(hb, '172.31.9.2', ['--name', B, '--ipalloc-init', 'consensus=2', '--peers', '172.31.9.1']));
    await ra.start();
    await rb.start();
    assert.ok(await until(() => ra.report().ipam.status === 'ready' && rb.report().ipam.status === 'ready', 15_000), 'both ready');
    assert.deepEqual(owners(ra), { [A]: 2 ** 19, [B]: 2 ** 19 });
    assert.deepEqual(owners(rb), owners(ra));
  });

  test('seed=A,B: both own half at once; an observer gets space from them', async () => {
    const [ha, hb, hc] = hosts('s', 3, track) as [Netns, Netns, Netns];
    const seed = ['--ipalloc-init', `seed=${A},${B}`];
    const ra = track(router(ha, '172.31.9.1', ['--name', A, ...seed]));
    await ra.start();
    // seeded: A owns its half before it has ever met B
    assert.deepEqual(owners(ra), { [A]: 2 ** 19, [B]: 2 ** 19 });
    const rb = track(router(hb, '172.31.9.2', ['--name', B, ...seed, '--peers', '172.31.9.1']));
    await rb.start();
    const pb = track(Netns.create('wi-sp'));
    const add = cni(hb, cniEnv('ADD', 'seeded', pb.path), netConf(rb.socket));
    assert.equal(add.code, 0, add.stdout);
    assert.match(add.json.ips[0].address, /^10\.(4[0-7])\./, 'B allocates from the upper half');
    // an observer takes no part in agreeing on owners, but gets space when it needs some
    const ro = track(router(hc, '172.31.9.3', ['--ipalloc-init', 'observer', '--peers', '172.31.9.2']));
    await ro.start();
    assert.ok(await until(() => ro.report().ipam.owners.length === 3, 15_000), 'the observer received space');
    assert.ok(owners(ro)[ro.report().router.name] > 0);
  });

  test('a donor halves a free block that is more than half of its space in the subnet asked for', async () => {
    const [ha, hb] = hosts('h', 2, track) as [Netns, Netns];
    const ra = track(router(ha, '172.31.9.1', ['--name', A]));
    const rb = track(router(hb, '172.31.9.2', ['--name', B, '--peers', '172.31.9.1']));
    await ra.start();
    await rb.start();
    // B's gateway took the upper half of the range: A's own gateway sits in the lower one
    assert.ok(await until(() => owners(ra)[B] === 2 ** 19, 15_000), 'B got 10.40.0.0/13');
    // in 10.32.5.0/24 A uses nothing: the whole /24 is free, more than half of A's space there
    const p = track(Netns.create('wi-hp'));
    const add = cni(hb, cniEnv('ADD', 'halved', p.path), netConf(rb.socket, { ipam: { subnet: '10.32.5.0/24' } }));
    assert.equal(add.code, 0, add.stdout);
    assert.equal(add.json.ips[0].gateway, '10.32.5.128', 'B got the upper half, 10.32.5.128/25: its gateway is the first address there');
    assert.equal(add.json.ips[0].address, '10.32.5.129/24');
    assert.ok(await until(() => owners(ra)[B] === 2 ** 19 + 128, 10_000), `A gave 128 addresses: ${JSON.stringify(owners(ra))}`);
    assert.equal(owners(ra)[A], 2 ** 19 - 128);
  });

  test('rings started apart are not merged: both routers say "ring conflict", naming the other', async () => {
    const [ha, hb] = hosts('x', 2, track) as [Netns, Netns];
    const ra = track(router(ha, '172.31.9.1', ['--name', A, '--ipalloc-init', `seed=${A}`]));
    const rb = track(router(hb, '172.31.9.2', ['--name', B, '--ipalloc-init', `seed=${B}`, '--peers', '172.31.9.1']));
    await ra.start();
    await rb.start();
    for (const [r, other] of [
      [ra, B],
      [rb, A],
    ] as const) {
      assert.ok(await until(() => r.report().ipam.status === 'ring conflict', 15_000), `${r.report().ipam.status}`);
      assert.match(r.report().ipam.reason, new RegExp(`IP allocation was seeded by different peers .*; peer ${other}`));
      assert.match(weftCli(r.socket, ['status']).out, /Status: ring conflict \(IP allocation was seeded by different peers/);
      const st = cni(r.host, { CNI_COMMAND: 'STATUS' }, netConf(r.socket, {}, '1.1.0'));
      assert.equal(st.json.code, 50);
      assert.match(st.json.msg, /ring conflict/);
      // each kept its own ring: nothing of the other's was merged in
      assert.deepEqual(owners(r), { [other === B ? A : B]: 2 ** 20 });
    }
  });

  test('rmpeer: refused while the peer is reachable; takes its space over once it is gone', async () => {
    const [ha, hb] = hosts('r', 2, track) as [Netns, Netns];
    const ra = track(router(ha, '172.31.9.1', ['--name', A]));
    const rb = track(router(hb, '172.31.9.2', ['--name', B, '--peers', '172.31.9.1']));
    await ra.start();
    await rb.start();
    assert.ok(await until(() => Object.keys(owners(ra)).length === 2, 15_000), 'B got space');
    const refused = weftCli(ra.socket, ['rmpeer', B]);
    assert.equal(refused.code, 1);
    assert.match(refused.err, /still reachable/);
    await rb.kill('SIGKILL');
    hb.run('ip', ['link', 'set', 'eth0', 'down']); // cut off: gone for good
    assert.ok(await until(() => ra.report().mesh.peers.some((p: any) => p.name === B && !p.reachable), 10_000), 'B unreachable');
    assert.equal(ra.report().ipam.owners.find((o: any) => o.peer === B).reachable, false);
    const ok = weftCli(ra.socket, ['rmpeer', B]);
    assert.equal(ok.code, 0, ok.err);
    assert.match(ok.out, /\d+ IPs taken over from 02:0b:00:00:00:02/);
    assert.deepEqual(owners(ra), { [A]: 2 ** 20 });
    // and it survives a restart of A
    await ra.kill('SIGTERM');
    await ra.start();
    assert.deepEqual(owners(ra), { [A]: 2 ** 20 });
  });
});
