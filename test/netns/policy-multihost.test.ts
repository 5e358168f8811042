/**
 * NetworkPolicy across two hosts: the upstream layout split over two host namespaces joined by
 * a kernel VXLAN over an underlay veth (as weft's hosts are), each host's engine enforcing its
 * own pods only (ingress as destination, egress as source). Traffic between the hosts is
 * checked at both ends, and replies of allowed connections pass both.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { labSkip, PolicyLab } from '../helpers/policy-lab';
import { check, inNs, ipOf, np, sel, upstreamLayout, type Case } from '../helpers/policy-cases';

const skip = labSkip();
/** a and c pods on host 1, b pods on host 2. */
const hostOf = (key: string) => (key.endsWith('/b') ? 1 : 0);
const onHost2 = (p: string) => hostOf(p) === 1;

const CASES: Case[] = [
  { name: 'no policy: every pod reaches every pod, across the VXLAN too', policies: [], expect: () => undefined },
  {
    name: 'deny-all ingress in x: enforced at each destination host',
    policies: [np('x', 'deny-all', { podSelector: {} })],
    expect: (t) => t.ingress(inNs('x'), false),
  },
  {
    name: 'egress of y only to y: enforced at each source host',
    policies: [np('y', 'own-ns', { podSelector: {}, policyTypes: ['Egress'], egress: [{ to: [{ podSelector: {} }] }] })],
    expect: (t) => t.where((f, to) => inNs('y')(f) && !inNs('y')(to), false),
  },
  {
    name: 'both ends isolated on different hosts: the allowed connection and its replies pass both',
    policies: [
      np('x', 'a-from-yb', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel({ ns: 'y' }), podSelector: sel({ pod: 'b' }) }], ports: [{ port: 80 }, { protocol: 'UDP', port: 80 }] }] }),
      np('y', 'b-to-xa', {
        podSelector: sel({ pod: 'b' }),
        policyTypes: ['Ingress', 'Egress'],
        egress: [{ to: [{ namespaceSelector: sel({ ns: 'x' }), podSelector: sel({ pod: 'a' }) }], ports: [{ port: 80 }, { protocol: 'UDP', port: 80 }] }],
      }),
    ],
    expect: (t, s) =>
      t
        .ingress('x/a', false)
        .ingress('y/b', false)
        .egress('y/b', false)
        .set('y/b', 'x/a', s.port === 80),
  },
  {
    name: 'ipBlock of the other host pods only',
    policies: [
      np('z', 'from-host2', {
        podSelector: sel({ pod: 'a' }),
        ingress: [{ from: ['x/b', 'y/b', 'z/b'].map((k) => ({ ipBlock: { cidr: `${ipOf(k)}/32` } })) }],
      }),
    ],
    expect: (t) => t.ingress('z/a', false).where((f, to) => to === 'z/a' && onHost2(f), true),
  },
];

describe('NetworkPolicy on two hosts over VXLAN', { skip, concurrency: false }, () => {
  let lab: PolicyLab;
  before(async () => {
    lab = await PolicyLab.create(2);
    await upstreamLayout(lab, hostOf);
  });
  after(async () => {
    await lab?.destroy();
  });

  for (const c of CASES) test(c.name, () => check(lab, c));

  test('each host counts the drops of its own pods: ingress at the destination, egress at the source', async () => {
    const [h1, h2] = lab.hosts as [(typeof lab.hosts)[0], (typeof lab.hosts)[0]];
    await lab.apply([np('x', 'deny-a', { podSelector: sel({ pod: 'a' }) }), np('y', 'deny-b-out', { podSelector: sel({ pod: 'b' }), policyTypes: ['Egress'] })]);
    lab.forgetFlows();
    const before = await Promise.all([h1.engine.drops(), h2.engine.drops()]);
    // x/b (host 2) -> x/a (host 1): dropped on host 1, on the way in
    const r1 = await lab.probe(lab.pod('x/b').ns, [{ protocol: 'tcp', host: ipOf('x/a'), port: 80, timeoutMs: 600 }]);
    // y/b (host 2) -> z/c (host 1): dropped on host 2, on the way out
    const r2 = await lab.probe(lab.pod('y/b').ns, [{ protocol: 'udp', host: ipOf('z/c'), port: 81, timeoutMs: 600 }]);
    assert.equal(r1[0]!.connected || r2[0]!.connected, false);
    const after = await Promise.all([h1.engine.drops(), h2.engine.drops()]);
    assert.ok(after[0].ingress > before[0].ingress, 'host 1 dropped the ingress');
    assert.equal(after[1].ingress, before[1].ingress, 'host 2 dropped no ingress');
    assert.ok(after[1].egress > before[1].egress, 'host 2 dropped the egress');
    assert.equal(after[0].egress, before[0].egress, 'host 1 dropped no egress');
    const b1 = await h1.engine.pollBlocked();
    assert.ok(b1.some((b) => b.direction === 'ingress' && b.srcPod === 'x/b' && b.dstPod === 'x/a'), JSON.stringify(b1));
    const b2 = await h2.engine.pollBlocked();
    assert.ok(b2.some((b) => b.direction === 'egress' && b.srcPod === 'y/b' && b.dstPod === 'z/c'), JSON.stringify(b2));
  });
});
