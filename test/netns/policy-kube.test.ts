/**
 * NetworkPolicy end to end: three real routers in Kubernetes mode, fed by the test API server,
 * enforce what is applied through the API. The upstream e2e layout (namespaces x, y, z labelled
 * ns=NAME; pods a, b, c in each labelled pod=NAME, the c pods also tier=db; every pod serving
 * ports 80 and 81 over TCP and UDP, SCTP for the SCTP case; x/b declares only its TCP ports by
 * name) spread over three hosts, so that most pairs cross the overlay: host = (namespace index +
 * pod index) mod 3. For each case the policies are applied through the API, every router is
 * waited for (its enforced resourceVersion), and the full 9x9 matrix per port and protocol is
 * probed and compared with the case's truth table (printed when they differ).
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { httpGet, weftCli, until } from '../helpers/netns';
import { labSkip } from '../helpers/policy-lab';
import { KubePolicyBed } from '../helpers/policy-kube';
import { check, inNs, NAMES, NS, np, portsOf, sel, SCTP, SHARED_CASES, TCP_UDP, type IpCase } from '../helpers/policy-cases';
import { longConnection, stream } from '../helpers/policy-traffic';

const skip = labSkip();
const NET = '172.31.14';
const RANGE = '10.32.0.0/12';
const hostOf = (key: string) => (NS.indexOf(key[0]!) + NAMES.indexOf(key[2]!)) % 3;

const both = { policyTypes: ['Ingress', 'Egress'] };
const CASES: IpCase[] = [
  { name: 'no policy: every pod reaches every pod, on one host and across hosts', policies: () => [], expect: () => undefined },
  ...SHARED_CASES,
  { name: 'deny-all both ways in y', policies: () => [np('y', 'deny-both', { podSelector: {}, ...both })], expect: (t) => t.ingress(inNs('y'), false).egress(inNs('y'), false) },
  {
    name: 'allow-all egress next to a deny-all egress',
    policies: () => [np('z', 'deny-out', { podSelector: {}, policyTypes: ['Egress'] }), np('z', 'allow-out', { podSelector: {}, policyTypes: ['Egress'], egress: [{}] })],
    expect: () => undefined,
  },
  {
    name: 'empty podSelector in a peer: every pod of the policy namespace',
    policies: () => [np('y', 'own-ns', { podSelector: sel({ pod: 'c' }), ingress: [{ from: [{ podSelector: {} }] }] })],
    expect: (t) => t.ingress('y/c', false).where((f, to) => to === 'y/c' && inNs('y')(f), true),
  },
  {
    name: 'empty namespaceSelector: pods of every namespace',
    policies: () => [np('x', 'all-ns', { podSelector: {}, ingress: [{ from: [{ namespaceSelector: {} }] }] })],
    expect: () => undefined,
  },
  {
    name: 'matchLabels and matchExpressions together, on the automatic kubernetes.io/metadata.name label',
    policies: () => [
      np('y', 'meta', {
        podSelector: { matchLabels: { pod: 'b' }, matchExpressions: [{ key: 'pod', operator: 'NotIn', values: ['a'] }] },
        ingress: [{ from: [{ namespaceSelector: { matchExpressions: [{ key: 'kubernetes.io/metadata.name', operator: 'In', values: ['x', 'z'] }] }, podSelector: sel({ pod: 'a' }) }] }],
      }),
    ],
    expect: (t) => t.ingress('y/b', false).set('x/a', 'y/b', true).set('z/a', 'y/b', true),
  },
  {
    name: 'podSelector NotIn as the target: every pod of x but x/a isolated',
    policies: () => [np('x', 'not-a', { podSelector: { matchExpressions: [{ key: 'pod', operator: 'NotIn', values: ['a'] }] } })],
    expect: (t) => t.ingress((p) => inNs('x')(p) && p !== 'x/a', false),
  },
  {
    name: 'ipBlock with except (ingress): the whole pod range but y/a',
    policies: (ip) => [np('x', 'block', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ ipBlock: { cidr: RANGE, except: [`${ip('y/a')}/32`] } }] }] })],
    expect: (t) => t.set('y/a', 'x/a', false),
  },
  {
    name: 'ipBlock of single addresses: z/a accepts the b pods only',
    policies: (ip) => [np('z', 'from-b', { podSelector: sel({ pod: 'a' }), ingress: [{ from: ['x/b', 'y/b', 'z/b'].map((k) => ({ ipBlock: { cidr: `${ip(k)}/32` } })) }] })],
    expect: (t) => t.ingress('z/a', false).where((f, to) => to === 'z/a' && f.endsWith('/b'), true),
  },
  {
    name: 'ipBlock with except (egress): y/c reaches the pod range but the z pods',
    policies: (ip) => [np('y', 'out-block', { podSelector: sel({ pod: 'c' }), policyTypes: ['Egress'], egress: [{ to: [{ ipBlock: { cidr: RANGE, except: NAMES.map((n) => `${ip(`z/${n}`)}/32`) } }] }] })],
    expect: (t) => t.where((f, to) => f === 'y/c' && inNs('z')(to), false),
  },
  {
    name: 'a protocol without a port: every UDP port',
    policies: () => [np('z', 'udp', { podSelector: sel({ pod: 'c' }), ingress: [{ ports: [{ protocol: 'UDP' }] }] })],
    expect: (t, s) => t.ingress('z/c', s.protocol === 'udp'),
  },
  {
    name: 'egress to pods by label in every namespace, TCP 81 only',
    policies: () => [np('y', 'to-c-81', { podSelector: sel({ pod: 'a' }), policyTypes: ['Egress'], egress: [{ to: [{ namespaceSelector: {}, podSelector: sel({ tier: 'db' }) }], ports: [{ port: 81 }] }] })],
    expect: (t, s) => t.egress('y/a', false).where((f, to) => f === 'y/a' && to.endsWith('/c') && s.protocol === 'tcp' && s.port === 81, true),
  },
  {
    name: 'both ends isolated on different hosts: the connection must be allowed out of one and into the other',
    policies: () => [
      np('x', 'a-from-yb', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel({ ns: 'y' }), podSelector: sel({ pod: 'b' }) }], ports: [{ port: 80 }, { protocol: 'UDP', port: 80 }] }] }),
      np('y', 'b-to-xa', { podSelector: sel({ pod: 'b' }), ...both, egress: [{ to: [{ namespaceSelector: sel({ ns: 'x' }) }], ports: [{ port: 80 }, { protocol: 'UDP', port: 80 }, { port: 81 }] }] }),
    ],
    expect: (t, s) =>
      t
        .ingress('x/a', false)
        .ingress('y/b', false)
        .egress('y/b', false)
        .where((f, to) => f === 'y/b' && inNs('x')(to) && (s.port === 80 || s.protocol === 'tcp') && to !== 'x/a', true)
        .set('y/b', 'x/a', s.port === 80),
  },
  {
    name: 'policies in two namespaces at once: x closed to all but z, z allowed out only to x',
    policies: () => [
      np('x', 'from-z', { podSelector: {}, ingress: [{ from: [{ namespaceSelector: sel({ ns: 'z' }) }] }] }),
      np('z', 'to-x', { podSelector: {}, policyTypes: ['Egress'], egress: [{ to: [{ namespaceSelector: sel({ ns: 'x' }) }] }] }),
    ],
    expect: (t) => t.ingress(inNs('x'), false).where((f, to) => inNs('z')(f) && inNs('x')(to), true).where((f, to) => inNs('z')(f) && !inNs('x')(to), false),
  },
  {
    name: 'explicit policyTypes Ingress: egress rules in the policy are ignored',
    policies: () => [np('y', 'ingress-only', { podSelector: sel({ pod: 'a' }), policyTypes: ['Ingress'], ingress: [{ from: [{ podSelector: sel({ pod: 'b' }) }] }], egress: [{ to: [{ podSelector: sel({ pod: 'b' }) }] }] })],
    expect: (t) => t.ingress('y/a', false).set('y/b', 'y/a', true),
  },
  {
    name: 'policyTypes absent with egress rules: Ingress and Egress both',
    policies: () => [np('z', 'default-types', { podSelector: sel({ pod: 'a' }), egress: [{ to: [{ podSelector: sel({ pod: 'b' }) }] }] })],
    expect: (t) => t.ingress('z/a', false).egress('z/a', false).set('z/a', 'z/b', true),
  },
];

describe('NetworkPolicy from the Kubernetes API through three real routers', { skip, concurrency: false, timeout: 900_000 }, () => {
  let bed: KubePolicyBed;
  before(async () => {
    bed = await KubePolicyBed.create('wpk', NET, 3);
    for (const ns of NS) await bed.namespace(ns, { ns });
    const keys = NS.flatMap((n) => NAMES.map((p) => `${n}/${p}`));
    // one at a time per host: the routers answer ADD in turn anyway
    await Promise.all(
      [0, 1, 2].map(async (h) => {
        for (const key of keys.filter((k) => hostOf(k) === h)) {
          const [ns, name] = key.split('/') as [string, string];
          await bed.addPod(h, ns, name, { pod: name, ...(name === 'c' ? { tier: 'db' } : {}) }, portsOf(key));
        }
      }),
    );
    bed.pods.sort((a, b) => a.key.localeCompare(b.key));
    await Promise.all(bed.pods.map((p) => bed.serve(p, [...TCP_UDP, ...SCTP])));
    await bed.settle();
  });
  after(async () => {
    await bed?.destroy();
  });

  test('every router knows the cluster: 9 pods, 3 on its own host, no policy, the table written', async () => {
    for (const i of [0, 1, 2]) {
      const st = await bed.policyStatus(i);
      assert.equal(st.enabled, true);
      assert.ok(st.source!.objects.pods >= 9 && st.source!.objects.namespaces >= 3, JSON.stringify(st.source));
      assert.equal(st.source!.local, 3);
      assert.equal(st.engine!.applied, true);
      assert.deepEqual(st.engine!.policies, []);
    }
    assert.deepEqual(
      [0, 1, 2].map((h) => bed.pods.filter((p) => p.host === h).length),
      [3, 3, 3],
    );
  });

  for (const c of CASES) test(c.name, () => check(bed, { name: c.name, policies: c.policies(bed.ip), expect: c.expect, specs: c.specs }));

  test('a policy changed in place, a pod relabelled, a namespace relabelled: enforcement follows each', async () => {
    const allowY = np('x', 'allow', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel({ ns: 'y' }) }] }] });
    await check(bed, { name: 'from y', policies: [allowY], expect: (t) => t.ingress('x/a', false).where((f, to) => to === 'x/a' && inNs('y')(f), true) });
    const allowZ = np('x', 'allow', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel({ ns: 'z' }) }] }] });
    await check(bed, { name: 'the same policy, now from z (an update, not a new object)', policies: [allowZ], expect: (t) => t.ingress('x/a', false).where((f, to) => to === 'x/a' && inNs('z')(f), true) });
    try {
      await bed.patch('/api/v1/namespaces/y', { metadata: { labels: { ns: 'z' } } });
      await bed.settle();
      await check(bed, {
        name: 'namespace y now labelled ns=z',
        policies: [allowZ],
        expect: (t) => t.ingress('x/a', false).where((f, to) => to === 'x/a' && (inNs('z')(f) || inNs('y')(f)), true),
      });
    } finally {
      await bed.patch('/api/v1/namespaces/y', { metadata: { labels: { ns: 'y' } } });
    }
    const toA = np('z', 'to-a', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: {} }] }] });
    try {
      await bed.patch('/api/v1/namespaces/z/pods/b', { metadata: { labels: { pod: 'a' } } });
      await bed.settle();
      await check(bed, { name: 'z/b relabelled pod=a: now selected as a target too', policies: [toA], expect: (t) => t.ingress('z/a', false).ingress('z/b', false).where((f, to) => (to === 'z/a' || to === 'z/b') && f !== to, true) });
    } finally {
      await bed.patch('/api/v1/namespaces/z/pods/b', { metadata: { labels: { pod: 'b' } } });
    }
    await bed.apply([]);
  });

  test('a malformed NetworkPolicy (a real API server would refuse it) is left out and reported; the rest is enforced', async () => {
    const bad = np('y', 'bad', { podSelector: {}, ingress: [{ ports: [{ port: 'serve-80-tcp', endPort: 90 }] }] });
    await check(bed, { name: 'malformed policy next to a deny-all in x', policies: [bad, np('x', 'deny-all', { podSelector: {} })], expect: (t) => t.ingress(inNs('x'), false) });
    for (const i of [0, 1, 2]) {
      const st = await bed.policyStatus(i);
      assert.deepEqual(st.source!.skipped.map((s) => s.object), ['networkpolicies:y/bad']);
      assert.match(st.source!.skipped[0]!.error, /spec\.ingress\.0\.ports\.0\.endPort: may not be set with a named port/);
    }
    const out = weftCli(bed.routers[0]!.socket, ['status', 'policy']);
    assert.equal(out.code, 0, out.err);
    assert.match(out.out, /Skipped: NetworkPolicy y\/bad: spec\.ingress\.0\.ports\.0\.endPort/);
    assert.match(out.out, /Policies: 1 \(1 selecting pods on this host\)/);
    await bed.apply([]);
    assert.deepEqual((await bed.policyStatus(0)).source!.skipped, []);
  });

  test('the node reaches its own pods and they reach it (kubelet probes), whatever the policies', async () => {
    await bed.apply(NS.map((n) => np(n, 'deny-both', { podSelector: {}, ...both })));
    bed.forgetFlows();
    await Promise.all(bed.hosts.map((h) => bed.serve(h, [{ protocol: 'tcp', port: 8080 }])));
    for (const [i, h] of bed.hosts.entries()) {
      const mine = bed.pods.filter((p) => p.host === i);
      const gateway = (await bed.policyStatus(i)).engine!;
      assert.equal(gateway.pods.length, 3, 'its three pods are isolated');
      const toPods = await bed.probe(h, mine.map((p) => ({ protocol: 'tcp', host: p.ip, port: 80, timeoutMs: 4000 })));
      assert.deepEqual(toPods.map((r) => r.connected), [true, true, true], `host ${i + 1} -> its pods`);
      const gw = bed.routers[i]!.report().ipam.attachments.find((a: { network: string }) => a.network === '_gateway').address.split('/')[0];
      const toNode = await Promise.all(mine.map((p) => bed.probe(p.ns, [{ protocol: 'tcp', host: gw, port: 8080, timeoutMs: 4000 }])));
      assert.deepEqual(toNode.map((r) => r[0]!.connected), [true, true, true], `pods -> host ${i + 1}`);
    }
    const between = await bed.probe(bed.pod('x/a').ns, [{ protocol: 'tcp', host: bed.ip('y/a'), port: 80, timeoutMs: 600 }]);
    assert.equal(between[0]!.connected, false, 'and the pods are isolated from each other');
    await bed.apply([]);
  });

  test('policies added and removed through the API while traffic flows: allowed flows go on, denied ones stop', async () => {
    await bed.apply([]);
    // x/a and y/a are on different hosts: the stream and the connection cross the overlay
    assert.notEqual(bed.pod('x/a').host, bed.pod('y/a').host);
    const ya = longConnection(bed.pod('y/a'), bed.ip('x/a'), 80);
    const yb = longConnection(bed.pod('y/b'), bed.ip('x/a'), 80);
    await Promise.all([ya.ready, yb.ready]);
    const fromYa = np('x', 'from-ya', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel({ ns: 'y' }), podSelector: sel({ pod: 'a' }) }], ports: [{ port: 80 }, { protocol: 'UDP', port: 80 }] }] });
    await bed.apply([fromYa]);
    await ya.roundTrip();
    await assert.rejects(yb.roundTrip(), /no "echo/, 'the open connection from y/b is cut');
    // a stream of new UDP flows from y/a (allowed all along) and from y/b (denied all along) while policies come and go
    const ok = stream(bed.pod('y/a'), bed.ip('x/a'), 80, 10_000);
    const bad = stream(bed.pod('y/b'), bed.ip('x/a'), 81, 20_000);
    await Promise.all([ok.started, bad.started]);
    for (let i = 0; i < 6; i++) {
      const extra = i % 2 ? [] : [np('z', `extra-${i}`, { podSelector: {}, policyTypes: ['Egress'] }), np('x', `deny-${i}`, { podSelector: {} })];
      await bed.apply([fromYa, ...extra]);
      await ya.roundTrip();
    }
    const [a, b] = await Promise.all([ok.stop(), bad.stop()]);
    assert.ok(a.sent > 100 && b.sent > 100, `streams sent ${a.sent} and ${b.sent}`);
    assert.equal(a.received, a.sent, `allowed stream: ${a.sent - a.received} of ${a.sent} lost while policies changed`);
    assert.equal(b.received, 0, 'the denied stream got replies');
    // all removed: new connections from y/b pass again
    await bed.apply([]);
    assert.equal((await bed.probe(bed.pod('y/b').ns, [{ protocol: 'tcp', host: bed.ip('x/a'), port: 80, timeoutMs: 4000 }]))[0]!.connected, true);
    await Promise.all([ya.close(), yb.close()]);
  });

  test('metrics: drops by direction as they happen, the time from API change to enforcement; /readyz reports a damaged table', async () => {
    const h = bed.pod('x/a').host;
    const ns = bed.hosts[h]!;
    const metric = (body: string, re: RegExp) => Number(re.exec(body)?.[1] ?? 'NaN');
    const scrape = () => httpGet(ns, 'http://127.0.0.1:6782/metrics').body;
    const before = scrape();
    const inBefore = metric(before, /^weft_policy_drops_total\{direction="ingress"\} (\d+)/m);
    assert.ok(metric(before, /^weft_policy_enforcement_seconds_count (\d+)/m) > 0, 'API changes were timed');
    await bed.apply([np('x', 'deny-a', { podSelector: sel({ pod: 'a' }) })]);
    bed.forgetFlows();
    const r = await bed.probe(bed.pod('z/c').ns, [{ protocol: 'udp', host: bed.ip('x/a'), port: 81, timeoutMs: 600 }]);
    assert.equal(r[0]!.connected, false);
    const after = scrape();
    assert.ok(metric(after, /^weft_policy_drops_total\{direction="ingress"\} (\d+)/m) > inBefore, 'the drops were counted');
    // someone flushes a chain of the table: /readyz says so (and the engine writes it again)
    const damaged = await until(() => {
      ns.run('nft', ['flush', 'chain', 'bridge', 'weft_policy', 'ingress']);
      const rz = httpGet(ns, 'http://127.0.0.1:6782/readyz');
      return rz.status === 503 && /NetworkPolicy table: chain ingress has 0 rules/.test(rz.body);
    }, 10_000, 0);
    assert.ok(damaged, '/readyz reported the damaged table');
    assert.ok(await until(() => httpGet(ns, 'http://127.0.0.1:6782/readyz').status === 200, 30_000), 'ready again once written again');
    bed.forgetFlows();
    assert.equal((await bed.probe(bed.pod('z/c').ns, [{ protocol: 'udp', host: bed.ip('x/a'), port: 81, timeoutMs: 600 }]))[0]!.connected, false, 'enforced again');
    await bed.apply([]);
  });

  test("a router restart keeps the rules in force until the new ones replace them; changes made while it was down apply when it is back", async () => {
    const h = bed.pod('x/a').host;
    const router = bed.routers[h]!;
    await bed.apply([np('x', 'deny-a', { podSelector: sel({ pod: 'a' }) })]);
    const probeA = async (timeoutMs: number) => (await bed.probe(bed.pod('y/b').ns, [{ protocol: 'tcp', host: bed.ip('x/a'), port: 80, timeoutMs }]))[0]!.connected;
    bed.forgetFlows();
    assert.equal(await probeA(600), false);
    await router.kill('SIGTERM');
    bed.forgetFlows();
    assert.equal(await probeA(600), false, 'still enforced with the router down');
    // the policy goes while the router is down; the other routers follow at once
    await bed.remove('/apis/networking.k8s.io/v1/namespaces/x/networkpolicies/deny-a');
    await router.start();
    // the engine starts once the router's Kubernetes client is up: wait for its status (bounded)
    assert.ok(await until(async () => (await bed.policyStatus(h).catch(() => undefined))?.engine?.keptFromBefore === true, 15_000), "the previous run's table was found and kept");
    await bed.apply([]);
    assert.equal(await probeA(4000), true, 'the change made while it was down is enforced');
  });
});
