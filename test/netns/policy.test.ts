/**
 * NetworkPolicy enforced by the kernel, probed: the upstream e2e layout (namespaces x, y, z;
 * pods a, b, c in each; ports 80 and 81 over TCP and UDP, SCTP where a case is about it) on one
 * host namespace whose bridge carries every pod, programmed by a PolicyEngine. For each case the
 * full 9x9 matrix per port is probed and must equal the case's truth table.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { labSkip, memoryLogger, PolicyLab, SUBNET } from '../helpers/policy-lab';
import { Netns, sh } from '../helpers/netns';
import { check, ipOf, np, NS, sel, SHARED_CASES, upstreamLayout, type Case } from '../helpers/policy-cases';
import { FAMILY, TABLE } from '../../src/policy/ruleset';
import { PolicyEngine } from '../../src/policy/engine';
import { longConnection, stream } from '../helpers/policy-traffic';

const skip = labSkip();
const CASES: Case[] = [
  { name: 'no policy: every pod reaches every pod', policies: [], expect: () => undefined },
  ...SHARED_CASES.map((c) => ({ ...c, policies: c.policies(ipOf) })),
  {
    name: 'ipBlock with except (ingress), and an egress ipBlock with except',
    policies: [
      np('x', 'block', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ ipBlock: { cidr: `${SUBNET}.0/24`, except: [`${ipOf('y/a')}/32`] } }] }] }),
      np('z', 'block-out', {
        podSelector: sel({ pod: 'a' }),
        policyTypes: ['Egress'],
        egress: [{ to: [{ ipBlock: { cidr: `${SUBNET}.16/28`, except: [`${SUBNET}.20/31`] } }] }],
      }),
    ],
    // .16/28 is .16-.31: y/a .20, y/b .21 (cut out), y/c .22, z/a .30, z/b .31; not z/c .32
    expect: (t) => t.set('y/a', 'x/a', false).egress('z/a', false).set('z/a', 'y/c', true).set('z/a', 'z/b', true),
  },
];

describe('NetworkPolicy on one host: the upstream matrix', { skip, concurrency: false }, () => {
  let lab: PolicyLab;
  before(async () => {
    lab = await PolicyLab.create(1);
    await upstreamLayout(lab, () => 0);
  });
  after(async () => {
    await lab?.destroy();
  });

  for (const c of CASES) test(c.name, () => check(lab, c));

  test('the node reaches its pods and they reach it, whatever the policies', async () => {
    await lab.apply(NS.map((n) => np(n, 'deny-both', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] })));
    lab.forgetFlows();
    const host = lab.hosts[0]!;
    await lab.serve(host.ns, [{ protocol: 'tcp', port: 8080 }]);
    const toPods = await lab.probe(host.ns, lab.pods.map((p) => ({ protocol: 'tcp', host: p.ip, port: 80, timeoutMs: 4000 })));
    assert.deepEqual(toPods.map((r) => r.connected), lab.pods.map(() => true), 'node -> pods');
    const toNode = await Promise.all(lab.pods.map((p) => lab.probe(p.ns, [{ protocol: 'tcp', host: host.gateway, port: 8080, timeoutMs: 4000 }])));
    assert.deepEqual(toNode.map((r) => r[0]!.connected), lab.pods.map(() => true), 'pods -> node');
    const between = await lab.probe(lab.pod('x/a').ns, [{ protocol: 'tcp', host: ipOf('y/a'), port: 80, timeoutMs: 600 }]);
    assert.equal(between[0]!.connected, false, 'and pods are isolated from each other');
  });

  test('egress routed through the host (outside the pod network) is checked too, except exempt ranges', async () => {
    const host = lab.hosts[0]!;
    const outside = Netns.create(`${host.ns.name.slice(0, 10)}-o`);
    try {
      sh('ip', ['-n', host.ns.name, 'link', 'add', 'out0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', outside.name]);
      host.ns.run('ip', ['addr', 'add', '192.168.99.1/24', 'dev', 'out0']);
      host.ns.run('ip', ['link', 'set', 'out0', 'up']);
      host.ns.run('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
      outside.run('ip', ['addr', 'add', '192.168.99.2/24', 'dev', 'eth0']);
      outside.run('ip', ['link', 'set', 'eth0', 'up']);
      outside.run('ip', ['route', 'add', `${SUBNET}.0/24`, 'via', '192.168.99.1']);
      await lab.serve(outside, [{ protocol: 'tcp', port: 80 }, { protocol: 'tcp', port: 81 }]);
      const policies = [np('x', 'out-80', { podSelector: sel({ pod: 'a' }), policyTypes: ['Egress'], egress: [{ to: [{ ipBlock: { cidr: '192.168.99.2/32' } }], ports: [{ port: 80 }] }] })];
      const probe = async () =>
        (await lab.probe(lab.pod('x/a').ns, [{ protocol: 'tcp', host: '192.168.99.2', port: 80, timeoutMs: 3000 }, { protocol: 'tcp', host: '192.168.99.2', port: 81, timeoutMs: 800 }])).map((r) => r.connected);
      await host.engine.update(lab.input(host, policies));
      assert.deepEqual(await probe(), [true, false], 'port 80 allowed by the ipBlock, 81 not');
      await host.engine.update({ ...lab.input(host, policies), exempt: ['192.168.99.0/24'] });
      assert.deepEqual(await probe(), [true, true], 'an exempt range is left to be checked after DNAT');
    } finally {
      outside.destroy();
      host.ns.tryRun('ip', ['link', 'del', 'out0']);
    }
  });

  test('drops are counted per direction and blocked connections logged with their pods', async () => {
    const engine = lab.hosts[0]!.engine;
    await lab.apply([np('x', 'deny-in', { podSelector: sel({ pod: 'a' }) }), np('y', 'deny-out', { podSelector: sel({ pod: 'b' }), policyTypes: ['Egress'] })]);
    const before = await engine.drops();
    await engine.pollBlocked(); // what earlier cases left in the sets
    lab.forgetFlows();
    const r = await lab.probe(lab.pod('z/c').ns, [{ protocol: 'tcp', host: ipOf('x/a'), port: 81, timeoutMs: 600 }]);
    const r2 = await lab.probe(lab.pod('y/b').ns, [{ protocol: 'udp', host: ipOf('z/a'), port: 80, timeoutMs: 600 }]);
    assert.equal(r[0]!.connected || r2[0]!.connected, false);
    const after = await engine.drops();
    assert.ok(after.ingress > before.ingress, `ingress drops ${before.ingress} -> ${after.ingress}`);
    assert.ok(after.egress > before.egress, `egress drops ${before.egress} -> ${after.egress}`);
    const blocked = await engine.pollBlocked();
    const inbound = blocked.find((b) => b.direction === 'ingress' && b.src === ipOf('z/c') && b.dst === ipOf('x/a') && b.dport === 81);
    assert.ok(inbound, JSON.stringify(blocked));
    assert.deepEqual([inbound.protocol, inbound.srcPod, inbound.dstPod], ['tcp', 'z/c', 'x/a']);
    assert.ok(blocked.some((b) => b.direction === 'egress' && b.srcPod === 'y/b' && b.dstPod === 'z/a' && b.protocol === 'udp' && b.dport === 80), JSON.stringify(blocked));
    const logged = lab.hosts[0]!.log.lines.filter((l) => l.level === 'warn' && l.msg.includes('blocked'));
    assert.ok(logged.some((l) => l.fields.pod === 'x/a' && l.fields.peer === 'z/c' && l.fields.dport === 81), JSON.stringify(logged.slice(-5)));
    const st = await engine.status();
    assert.deepEqual(st.pods.map((p) => `${p.namespace}/${p.name}:${p.ingress.join()}:${p.egress.join()}`), ['x/a:x/deny-in:', 'y/b::y/deny-out']);
    assert.equal(st.sets.ingress_isolated, 1);
    assert.equal(st.sets.egress_isolated, 1);
    assert.equal(st.drops.ingress, after.ingress);
  });

  test('a policy change is one transaction: an allowed stream loses nothing, a denied one gets nothing through', async () => {
    // y/a -> x/a udp/80 is allowed by every one of the states flipped between; y/b -> x/a udp/81 by none
    const states = [
      [np('x', 'allow-y-80', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel({ ns: 'y' }) }], ports: [{ protocol: 'UDP', port: 80 }] }] })],
      [
        np('x', 'allow-ya', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel({ ns: 'y' }), podSelector: sel({ pod: 'a' }) }] }] }),
        np('x', 'deny-rest', { podSelector: {} }),
      ],
      [np('x', 'allow-block', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ ipBlock: { cidr: `${ipOf('y/a')}/32` } }], ports: [{ protocol: 'UDP', port: 80, endPort: 80 }] }] })],
    ];
    await lab.apply(states[0]!);
    const engine = lab.hosts[0]!.engine;
    await engine.pollBlocked(); // what earlier cases left
    // the streams' datagrams are UDP; another packet dropped in the window (an ICMP error, say) is not theirs
    const udpDrops = async () => (await engine.dropsBy('ingress')).udp ?? 0;
    const dropsBefore = await udpDrops();
    const ok = stream(lab.pod('y/a'), ipOf('x/a'), 80, 10_000);
    const bad = stream(lab.pod('y/b'), ipOf('x/a'), 81, 20_000);
    await Promise.all([ok.started, bad.started]);
    for (let i = 1; i <= 24; i++) await lab.apply(states[i % states.length]!);
    const [a, b] = await Promise.all([ok.stop(), bad.stop()]);
    const dropsAfter = await udpDrops();
    assert.equal(dropsAfter - dropsBefore, b.sent, 'exactly the denied datagrams were dropped, none of the allowed stream');
    const blocked = await engine.pollBlocked();
    assert.deepEqual(blocked.filter((x) => x.src === ipOf('y/a')), [], 'the policy dropped datagrams of the allowed stream');
    assert.ok(blocked.some((x) => x.src === ipOf('y/b') && x.dport === 81), 'the denied stream was dropped by the policy');
    assert.ok(a.sent > 100, `allowed stream sent ${a.sent}`);
    assert.equal(a.received, a.sent, `allowed stream: ${a.sent - a.received} of ${a.sent} lost during 24 updates`);
    assert.ok(b.sent > 100);
    assert.equal(b.received, 0, 'denied stream got replies');
  });

  test('policies added and removed while connections are open: allowed ones keep flowing, denied ones stop', async () => {
    await lab.apply([]);
    const ya = longConnection(lab.pod('y/a'), ipOf('x/a'), 80);
    const yb = longConnection(lab.pod('y/b'), ipOf('x/a'), 80);
    await Promise.all([ya.ready, yb.ready]);
    // x/a now accepts y/a on 80 only: y/a's open connection carries on (its replies too), y/b's stops
    const fromYa = np('x', 'from-ya', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel({ ns: 'y' }), podSelector: sel({ pod: 'a' }) }], ports: [{ port: 80 }] }] });
    await lab.apply([fromYa]);
    await ya.roundTrip();
    await assert.rejects(yb.roundTrip(), /no "echo/);
    assert.equal((await lab.probe(lab.pod('y/b').ns, [{ protocol: 'tcp', host: ipOf('x/a'), port: 80, timeoutMs: 600 }]))[0]!.connected, false);
    // y/a isolated both ways too; a connection opened now keeps flowing while other policies come and go
    const allowed = [fromYa, np('y', 'to-xa', { podSelector: sel({ pod: 'a' }), policyTypes: ['Ingress', 'Egress'], egress: [{ to: [{ namespaceSelector: sel({ ns: 'x' }), podSelector: sel({ pod: 'a' }) }], ports: [{ port: 80 }] }] })];
    await lab.apply(allowed);
    const ya2 = longConnection(lab.pod('y/a'), ipOf('x/a'), 80);
    await ya2.ready;
    for (let i = 0; i < 6; i++) {
      await lab.apply(i % 2 ? allowed : [...allowed, np('z', `extra-${i}`, { podSelector: {}, policyTypes: ['Egress'] })]);
      await ya2.roundTrip();
      await ya.roundTrip();
    }
    // all removed: new connections pass again
    await lab.apply([]);
    assert.equal((await lab.probe(lab.pod('y/b').ns, [{ protocol: 'tcp', host: ipOf('x/a'), port: 80, timeoutMs: 4000 }]))[0]!.connected, true);
    await Promise.all([ya.close(), yb.close(), ya2.close()]);
  });

  test('a restarted engine keeps the rules in force until its first update, and the flows through it; a damaged table is written again', async () => {
    const host = lab.hosts[0]!;
    await lab.apply([np('x', 'from-ya', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel({ ns: 'y' }), podSelector: sel({ pod: 'a' }) }] }] })]);
    const conn = longConnection(lab.pod('y/a'), ipOf('x/a'), 80);
    await conn.ready;
    await conn.roundTrip();
    await host.engine.stop();
    const fresh = new PolicyEngine({ log: memoryLogger(), nft: host.nft }, { blockedPollMs: 0, verifyMs: 60_000 });
    host.engine = fresh;
    await fresh.start();
    assert.equal((await fresh.status()).keptFromBefore, true);
    const probe = (from: string) => lab.probe(lab.pod(from).ns, [{ protocol: 'tcp', host: ipOf('x/a'), port: 80, timeoutMs: 600 }]);
    assert.equal((await probe('y/b'))[0]!.connected, false, 'still enforced after the restart, before any update');
    // the first update writes everything; x/a now refuses everyone, but the flow seen allowed goes on
    await lab.apply([np('x', 'deny-a', { podSelector: sel({ pod: 'a' }) })]);
    assert.equal((await fresh.status()).lastApply?.kind, 'full');
    await conn.roundTrip();
    assert.equal((await probe('y/a'))[0]!.connected, false, 'a new connection from y/a is refused');
    // someone flushes a chain: verify notices and puts it back
    host.ns.run('nft', ['flush', 'chain', FAMILY, TABLE, 'ingress']);
    assert.match((await fresh.verify()) ?? '', /chain ingress has 0 rules/);
    const deadline = Date.now() + 10_000;
    while ((await fresh.verify()) !== undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(await fresh.verify(), undefined);
    assert.equal((await probe('y/b'))[0]!.connected, false, 'enforced again');
    await conn.close();
  });
});
