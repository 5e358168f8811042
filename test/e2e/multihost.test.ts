/**
 * Many hosts, one network: the checks of the multi-host issue that need hosts joined in a
 * chain, a continuous ping across a router crash, a host cut off and back, subnets across
 * hosts, and a jumbo-frame underlay. Each suite has its own sandbox (prefix) and removes it.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cni, cniEnv, Netns, weftCli } from '../helpers/netns';
import { needs, NETNS } from '../helpers/needs';
import { eventually, inRange, newSandbox, upOpts } from '../helpers/sandbox';
import type { Sandbox, SandboxPod } from '../../src/sandbox';
import type { Report } from '../../src/router/report';

const skip = needs(NETNS);
// faster failure detection than production's, so a cut-off host shows within seconds
const FAST = { WEFT_HEARTBEAT_MS: '500', WEFT_RETRY_MIN_MS: '300', WEFT_RETRY_MAX_MS: '2000', WEFT_PROBE_MS: '1000', WEFT_PROGRAM_MS: '1000' };
const withEnv = async <T>(env: Record<string, string>, f: () => Promise<T>): Promise<T> => {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  try {
    return await f();
  } finally {
    for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k];
      else process.env[k] = v;
  }
};
const established = (r: Report) => r.mesh.connections.filter((c) => c.state === 'established').length;
const allAddresses = async (sb: Sandbox) => {
  const rs = await sb.reports();
  return rs.flatMap((r) => (r instanceof Error ? [] : r.ipam.attachments.map((a) => a.address.split('/')[0]!)));
};

describe('hosts joined by chained connects', { skip, concurrency: false, timeout: 300_000 }, () => {
  let sb: Sandbox;
  before(async () => {
    sb = newSandbox('c');
    await withEnv(FAST, () => sb.up({ ...upOpts(3, 2), join: 'chain' }));
  });
  after(async () => {
    await sb?.down();
  });

  test('host3 knows only host2, host2 only host1: the mesh closes itself (3 peers, 6 connections)', async () => {
    const ok = await eventually(async () => {
      const rs = await sb.reports();
      return rs.every((r) => !(r instanceof Error) && r.mesh.peers.length === 3 && established(r) === 2);
    }, 30_000);
    assert.ok(ok, 'full mesh');
    const r3 = await sb.report(3);
    assert.deepEqual(r3.mesh.targets, ['172.30.0.12:6783'], 'host3 was told only of host2');
    const total = (await sb.reports()).reduce((n, r) => n + (r instanceof Error ? 0 : established(r)), 0);
    assert.equal(total, 6);
    const m = await sb.pingMatrix();
    assert.deepEqual(m.duplicates, []);
    assert.equal(m.sameHost.ok + m.crossHost.ok, 30);
  });

  test('weft status matches the actual peers and connections', async () => {
    // every peer's own list of connections arrives by gossip, shortly after the mesh is whole
    assert.ok(await eventually(async () => /Peers: 3 \(with 6 established connections\)/.test(await sb.weftStatus(1)), 15_000), await sb.weftStatus(1));
    const out = (await sb.weftStatus(1)) as string;
    assert.match(out, /Connections: 2 \(2 established\)/);
    const lines = () => weftCli(sb.host(1).socket, ['status', 'connections']).out.trim().split('\n');
    // the first data-path probe of each peer follows the mesh by a probe interval or so; on a
    // loaded machine two late probes in a row may carry a peer on the sleeve until one passes
    assert.ok(await eventually(async () => lines().every((l) => l.includes('fastdp (probe ok)')), 30_000), lines().join('\n'));
    const conns = lines();
    assert.equal(conns.length, 2);
    for (const l of conns) assert.match(l, /^(->|<-) 172\.30\.0\.1[23]:\d+ +established unencrypted fastdp \(probe ok\) [0-9a-f:]{17}\(host[23]\) mtu=1450$/);
    const peers = weftCli(sb.host(1).socket, ['status', 'peers']).out.trim().split('\n');
    assert.equal(peers.length, 3);
    assert.ok(peers.every((l) => / reachable /.test(l)));
  });

  test('the data-path probe tells a broken path from a working one: the peer moves to the sleeve, and back', async () => {
    const h2 = new Netns(sb.host(2).netns);
    const probe = () => weftCli(sb.host(1).socket, ['status', 'connections']).out.split('\n').find((l) => l.includes('(host2)')) ?? '';
    assert.ok(await eventually(async () => probe().includes('fastdp (probe ok)'), 10_000), probe());
    h2.run('iptables', ['-I', 'INPUT', '-p', 'udp', '--dport', '6784', '-j', 'DROP']);
    try {
      assert.ok(await eventually(async () => probe().includes('unencrypted sleeve'), 15_000), `VXLAN dropped on host2: ${probe()}`);
      const a = sb.podsOf(1)[0]!;
      const b = sb.podsOf(2)[0]!;
      assert.ok(await eventually(async () => new Netns(a.netnsPath.split('/').pop()!).tryRun('ping', ['-c', '1', '-W', '1', b.address!]).ok, 15_000), 'pods still reach each other over the sleeve');
    } finally {
      h2.run('iptables', ['-D', 'INPUT', '-p', 'udp', '--dport', '6784', '-j', 'DROP']);
    }
    assert.ok(await eventually(async () => probe().includes('fastdp (probe ok)'), 20_000), probe());
  });

  test('a running ping loses nothing while a router is killed with -9 and restarted; allocations are kept', async () => {
    const a = sb.podsOf(1)[0]!;
    const b = sb.podsOf(3)[0]!;
    const before = (await sb.report(3)).ipam.attachments.map((x) => `${x.containerId} ${x.address}`).sort();
    const ping = spawn('nsenter', [`--net=${a.netnsPath}`, '--', 'ping', '-i', '0.05', '-c', '120', '-W', '1', b.address!]);
    let out = '';
    ping.stdout.on('data', (d) => (out += d));
    let closed = false;
    ping.on('close', () => (closed = true));
    const replies = () => out.split('\n').filter((l) => / bytes from /.test(l)).length;
    try {
      // pings flow before the crash, while the router is dead, and after its restart
      assert.ok(await eventually(async () => replies() >= 10, 15_000, 20), `replies before the kill: ${out}`);
      await sb.killRouter(3, 'SIGKILL');
      const atKill = replies();
      assert.ok(await eventually(async () => replies() >= atKill + 10, 15_000, 20), 'replies while the router is down');
      await sb.startRouter(3);
      assert.ok(await eventually(async () => closed, 30_000, 50), 'ping finished its 120 packets');
    } finally {
      ping.kill();
    }
    const m = /(\d+) packets transmitted, (\d+) received/.exec(out);
    assert.ok(m, out);
    assert.equal(m[1], '120');
    assert.equal(m[2], '120', `lost ${Number(m[1]) - Number(m[2])} packets`);
    const after = (await sb.report(3)).ipam.attachments.map((x) => `${x.containerId} ${x.address}`).sort();
    assert.deepEqual(after, before);
  });

  test('a host cut off: status says so and flags its space unreachable; it rejoins, and no address is ever held twice', async () => {
    await sb.disconnect(3);
    try {
      const name3 = (await sb.report(3)).router.name;
      assert.ok(
        await eventually(async () => {
          const r = await sb.report(1);
          return r.mesh.peers.some((p) => p.name === name3 && !p.reachable) && established(r) === 1;
        }, 15_000),
        'host1 sees host3 unreachable',
      );
      const ipam = weftCli(sb.host(1).socket, ['status', 'ipam']).out;
      assert.match(ipam, /\(host3\) \d+ IPs .* - unreachable!/);
      const r1 = await sb.report(1);
      assert.ok(r1.ipam.owners.some((o) => o.nickname === 'host3' && !o.reachable));
      // both sides keep allocating from their own space while apart
      await sb.addPods(3, 2);
      await sb.addPods(1, 2);
    } finally {
      await sb.reconnect(3);
    }
    assert.ok(
      await eventually(async () => (await sb.reports()).every((r) => !(r instanceof Error) && r.mesh.peers.every((p) => p.reachable) && established(r) === 2), 30_000),
      'rejoined',
    );
    const addrs = await allAddresses(sb);
    assert.equal(new Set(addrs).size, addrs.length, `no duplicates among ${addrs.length}`);
    const m = await sb.pingMatrix();
    assert.deepEqual(m.duplicates, []);
    assert.equal(m.crossHost.ok, m.crossHost.total);
  });

  test('report counts agree with ps and with the pods that exist', async () => {
    for (const h of [1, 2, 3]) {
      const r = await sb.report(h);
      const ps = weftCli(sb.host(h).socket, ['ps']).out.trim().split('\n');
      assert.equal(ps.length, r.ipam.attachments.length);
      const pods = r.ipam.attachments.filter((a) => a.network !== '_gateway').map((a) => a.address.split('/')[0]).sort();
      const real = sb
        .podsOf(h)
        .map((p) => p.address)
        .sort();
      assert.deepEqual(pods, real, `host${h}`);
    }
  });
});

describe('subnets across hosts', { skip, concurrency: false, timeout: 300_000 }, () => {
  let sb: Sandbox;
  const extra: Netns[] = [];
  before(async () => {
    sb = newSandbox('s');
    await sb.up(upOpts(2, 0));
  });
  after(async () => {
    for (const p of extra) p.destroy();
    await sb?.down();
  });

  test('pods in one subnet reach each other across hosts; pods in different subnets do not', async () => {
    const add = (h: number, id: string, conf: Record<string, unknown>, env: Record<string, string> = {}) => {
      const ns = Netns.create(`${sb.prefix}-x`);
      extra.push(ns);
      const host = new Netns(sb.host(h).netns);
      const r = cni(host, cniEnv('ADD', id, ns.path, 'eth0', env), { cniVersion: '1.0.0', name: 'sub', type: 'weft-net', socket: sb.host(h).socket, ...conf });
      assert.equal(r.code, 0, r.stdout);
      return { ns, addr: r.json.ips[0].address.split('/')[0] as string };
    };
    const blue1 = add(1, 'blue-1', { ipam: { subnet: '10.32.1.0/24' } });
    const blue2 = add(2, 'blue-2', { ipam: { subnet: '10.32.1.0/24' } });
    const red2 = add(2, 'red-2', { ipam: { subnet: '10.32.2.0/24' } });
    assert.ok(inRange(blue2.addr, '10.32.1.0/24'), blue2.addr);
    assert.ok(inRange(red2.addr, '10.32.2.0/24'), red2.addr);
    assert.ok(await eventually(async () => blue1.ns.ping(blue2.addr), 10_000), 'blue to blue across hosts');
    assert.ok(!blue1.ns.ping(red2.addr), 'blue to red across hosts: isolated');
    assert.ok(!red2.ns.ping(blue2.addr), 'red to blue on one host: isolated');
    // the seeds' explicit addresses: 10.0.1.0/24 on both hosts
    const e1 = add(1, 'ext-1', {}, { CNI_ARGS: 'IP=10.0.1.1/24' });
    const e2 = add(2, 'ext-2', {}, { CNI_ARGS: 'IP=10.0.1.2/24' });
    assert.ok(await eventually(async () => e1.ns.ping(e2.addr), 10_000), 'explicit subnet across hosts');
    assert.ok(!e1.ns.ping(blue2.addr));
    // the host joins a subnet with expose, and leaves it with hide
    const h1 = new Netns(sb.host(1).netns);
    assert.equal(weftCli(sb.host(1).socket, ['expose', '10.0.1.100/24']).code, 0);
    assert.ok(h1.ping('10.0.1.2'), 'exposed host reaches a pod of that subnet on another host');
    assert.equal(weftCli(sb.host(1).socket, ['hide', '10.0.1.100/24']).code, 0);
    assert.ok(!h1.ping('10.0.1.2'));
  });
});

describe('jumbo frames on the underlay', { skip, concurrency: false, timeout: 300_000 }, () => {
  let sb: Sandbox;
  before(async () => {
    sb = newSandbox('j');
    await sb.up({ ...upOpts(2, 1), mtu: 9000 });
  });
  after(async () => {
    await sb?.down();
  });

  test('pods get the underlay MTU less VXLAN overhead (8950) and full-size frames cross hosts', async () => {
    const r = await sb.report(1);
    assert.equal(r.router.mtu, 8950);
    const [a] = sb.podsOf(1) as [SandboxPod];
    const [b] = sb.podsOf(2) as [SandboxPod];
    const eth0 = new Netns(a.name).links().find((l) => l.ifname === 'eth0')!;
    assert.equal(eth0.mtu, 8950);
    const big = new Netns(a.name).tryRun('ping', ['-c', '2', '-W', '1', '-M', 'do', '-s', String(8950 - 28), b.address!]);
    assert.ok(big.ok, big.out + big.err);
    const tooBig = new Netns(a.name).tryRun('ping', ['-c', '1', '-W', '1', '-M', 'do', '-s', String(8950 - 27), b.address!]);
    assert.ok(!tooBig.ok, 'one byte more does not fit');
  });
});
