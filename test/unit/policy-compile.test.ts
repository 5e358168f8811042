import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { compile, Compiler } from '../../src/policy/compile';
import { parseNamespace, parseNetworkPolicy, parsePod, type PolicyInput } from '../../src/policy/model';
import { cidrMinus, disjointCover, type Box } from '../../src/policy/intervals';
import { parseCidr } from '../../src/common/ip';
import { planAllows, referenceAllows, SimSets, type Packet } from '../helpers/policy-sim';

// ---------------------------------------------------------------- intervals

const boxArb = (dims: number) =>
  fc.array(
    fc.tuple(...Array.from({ length: dims }, () => fc.tuple(fc.integer({ min: 0, max: 20 }), fc.integer({ min: 0, max: 6 })))).map((b) => b.map(([lo, len]) => [lo, lo + len] as const)),
    { maxLength: 8 },
  );

test('disjointCover covers exactly the union of the boxes, with no two boxes overlapping', () => {
  fc.assert(
    fc.property(boxArb(3), (boxes) => {
      const cover = disjointCover(boxes as Box[]);
      const inBox = (b: Box, p: number[]) => b.every(([lo, hi], i) => p[i]! >= lo && p[i]! <= hi);
      for (let x = 0; x <= 27; x++)
        for (let y = 0; y <= 27; y++)
          for (let z = 0; z <= 27; z += 3) {
            const p = [x, y, z];
            const want = boxes.some((b) => inBox(b as Box, p));
            const hits = cover.filter((b) => inBox(b, p)).length;
            if (hits !== (want ? 1 : 0)) return false;
          }
      return true;
    }),
    { numRuns: 150 },
  );
});

test('an ipBlock minus its excepts is the block without the holes', () => {
  fc.assert(
    fc.property(fc.integer({ min: 20, max: 28 }), fc.array(fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 25, max: 32 })), { maxLength: 5 }), (prefix, holes) => {
      const block = parseCidr(`10.0.0.0/${prefix}`)!;
      const size = 2 ** (32 - prefix);
      const except = holes.map(([off, p]) => ({ base: (block.base + (off % Math.min(size, 256))) & ~(2 ** (32 - p) - 1), prefix: p })).filter((c) => c.prefix > prefix);
      const spans = cidrMinus(block, except);
      for (let a = block.base; a < block.base + Math.min(size, 512); a++) {
        const want = !except.some((c) => a >= c.base && a < c.base + 2 ** (32 - c.prefix));
        if (spans.some(([lo, hi]) => a >= lo && a <= hi) !== want) return false;
      }
      return true;
    }),
  );
});

// ---------------------------------------------------------------- random clusters against the reference

const NAMES = ['x', 'y', 'z'];
const PORTS = [
  { name: 'http', containerPort: 80, protocol: 'TCP' },
  { name: 'http', containerPort: 8080, protocol: 'TCP' },
  { name: 'dns', containerPort: 53, protocol: 'UDP' },
  { name: 'web', containerPort: 81 },
  { name: 'sc', containerPort: 90, protocol: 'SCTP' },
];
const LABEL_KEYS = ['app', 'tier', 'team', 'kubernetes.io/metadata.name'];
const LABEL_VALUES = ['a', 'b', 'x', 'y'];

const labelsArb = fc.dictionary(fc.constantFrom('app', 'tier'), fc.constantFrom(...LABEL_VALUES), { maxKeys: 2 });
const exprArb = fc.oneof(
  fc.record({ key: fc.constantFrom(...LABEL_KEYS), operator: fc.constantFrom('In', 'NotIn'), values: fc.uniqueArray(fc.constantFrom(...LABEL_VALUES), { minLength: 1, maxLength: 2 }) }),
  fc.record({ key: fc.constantFrom(...LABEL_KEYS), operator: fc.constantFrom('Exists', 'DoesNotExist') }),
);
const selectorArb = fc.record(
  { matchLabels: fc.dictionary(fc.constantFrom('app', 'tier', 'team'), fc.constantFrom(...LABEL_VALUES), { maxKeys: 1 }), matchExpressions: fc.array(exprArb, { maxLength: 2 }) },
  { requiredKeys: [] },
);
const cidrArb = fc.constantFrom('10.0.0.0/24', '10.0.0.0/28', '10.0.0.16/28', '0.0.0.0/0', '10.0.0.8/29', '192.168.1.0/24');
const peerArb = fc.oneof(
  fc.record({ podSelector: selectorArb, namespaceSelector: selectorArb }, { requiredKeys: [] }).filter((p) => Object.keys(p).length > 0),
  cidrArb.chain((cidr) => {
    const c = parseCidr(cidr)!;
    const holes = c.prefix >= 29 ? fc.constant([]) : fc.array(fc.integer({ min: 0, max: 15 }).map((i) => `10.0.0.${(i * 4) % 256}/30`), { maxLength: 2 });
    return holes.map((except) => ({ ipBlock: { cidr, except: except.filter((e) => c.prefix < 30 && cidrContains(cidr, e)) } }));
  }),
  fc.constant({ ipBlock: { cidr: 'fd00::/64' } }),
);
function cidrContains(outer: string, inner: string): boolean {
  const o = parseCidr(outer)!;
  const i = parseCidr(inner)!;
  return i.prefix > o.prefix && i.base >= o.base && i.base < o.base + 2 ** (32 - o.prefix);
}
const portArb = fc.oneof(
  fc.record({ protocol: fc.constantFrom('TCP', 'UDP', 'SCTP'), port: fc.constantFrom(53, 80, 81, 90, 8080) }, { requiredKeys: ['port'] }),
  fc.record({ protocol: fc.constantFrom('TCP', 'UDP', 'SCTP'), port: fc.constantFrom(80, 81), endPort: fc.constantFrom(81, 90, 8080) }, { requiredKeys: ['port', 'endPort'] }),
  fc.record({ protocol: fc.constantFrom('TCP', 'UDP', 'SCTP'), port: fc.constantFrom('http', 'dns', 'web', 'sc', 'nope') }, { requiredKeys: ['port'] }),
  fc.record({ protocol: fc.constantFrom('TCP', 'UDP', 'SCTP') }),
);
const ruleArb = (peerKey: 'from' | 'to') =>
  fc.record({ [peerKey]: fc.array(peerArb, { maxLength: 2 }), ports: fc.array(portArb, { maxLength: 2 }) }, { requiredKeys: [] });
const policyArb = fc.record(
  {
    namespace: fc.constantFrom(...NAMES),
    podSelector: selectorArb,
    policyTypes: fc.subarray(['Ingress', 'Egress']),
    ingress: fc.array(ruleArb('from'), { maxLength: 2 }),
    egress: fc.array(ruleArb('to'), { maxLength: 2 }),
  },
  { requiredKeys: ['namespace', 'podSelector'] },
);
const podArb = fc.record({
  labels: labelsArb,
  ports: fc.subarray(PORTS),
  local: fc.boolean(),
  odd: fc.constantFrom(undefined, undefined, undefined, undefined, 'hostNetwork', 'Failed'),
});
const clusterArb = fc.record({
  nsLabels: fc.array(fc.dictionary(fc.constantFrom('team'), fc.constantFrom(...LABEL_VALUES), { maxKeys: 1 }), { minLength: 3, maxLength: 3 }),
  pods: fc.array(fc.tuple(fc.constantFrom(...NAMES), podArb), { minLength: 1, maxLength: 9 }),
  policies: fc.array(policyArb, { maxLength: 4 }),
});

type Cluster = typeof clusterArb extends fc.Arbitrary<infer T> ? T : never;

function buildInput(c: Cluster): PolicyInput {
  const namespaces = NAMES.map((n, i) => parseNamespace({ metadata: { name: n, labels: c.nsLabels[i] } }));
  const pods = c.pods.map(([ns, p], i) =>
    parsePod({
      metadata: { namespace: ns, name: `p${i}`, labels: p.labels },
      spec: { hostNetwork: p.odd === 'hostNetwork', containers: [{ ports: p.ports }] },
      status: { phase: p.odd === 'Failed' ? 'Failed' : 'Running', podIP: `10.0.0.${10 + i}` },
    }),
  );
  const policies = c.policies.map((p, i) => parseNetworkPolicy({ metadata: { namespace: p.namespace, name: `np${i}` }, spec: { ...p, namespace: undefined } }));
  const local = c.pods.flatMap(([ns, p], i) => (p.local ? [{ ip: `10.0.0.${10 + i}`, namespace: ns, name: `p${i}` }] : []));
  return { namespaces, pods, policies, local, nodeAddresses: ['10.0.0.1'] };
}

const PROTOS = [6, 17, 132, 1];
const DPORTS = [53, 80, 81, 82, 90, 8080, 8081];

test('compiled sets decide every packet as the documented semantics do (random clusters)', () => {
  fc.assert(
    fc.property(clusterArb, (c) => {
      const input = buildInput(c);
      const plan = compile(input);
      const sets = new SimSets(plan.elements);
      const addrs = ['10.0.0.1', '10.0.0.9', '192.168.1.7', ...input.pods.map((_, i) => `10.0.0.${10 + i}`)];
      for (const src of addrs)
        for (const dst of addrs)
          for (const proto of PROTOS)
            for (const dport of DPORTS) {
              const p: Packet = { src, dst, proto, dport };
              const want = referenceAllows(input, p);
              const got = planAllows(sets, p);
              if (want !== got) throw new Error(`${JSON.stringify(p)}: reference says ${want}, compiled sets say ${got}`);
            }
      return true;
    }),
    { numRuns: 300 },
  );
});

// ---------------------------------------------------------------- specific semantics

const ns = (name: string, labels: Record<string, string> = {}) => parseNamespace({ metadata: { name, labels } });
const pod = (namespace: string, name: string, ip: string, labels: Record<string, string> = {}, ports: unknown[] = []) =>
  parsePod({ metadata: { namespace, name, labels }, spec: { containers: [{ ports }] }, status: { podIP: ip, phase: 'Running' } });
const policy = (namespace: string, name: string, spec: Record<string, unknown>) => parseNetworkPolicy({ metadata: { namespace, name }, spec });
const tcp = (src: string, dst: string, dport: number): Packet => ({ src, dst, proto: 6, dport });

function world(policies: ReturnType<typeof policy>[]) {
  const input: PolicyInput = {
    namespaces: [ns('x', { team: 'red' }), ns('y', { team: 'blue' })],
    pods: [
      pod('x', 'a', '10.0.0.2', { app: 'a' }, [{ name: 'http', containerPort: 8080 }]),
      pod('x', 'b', '10.0.0.3', { app: 'b' }),
      pod('y', 'a', '10.0.0.4', { app: 'a' }, [{ name: 'http', containerPort: 9090 }]),
    ],
    policies,
    local: [
      { ip: '10.0.0.2', namespace: 'x', name: 'a' },
      { ip: '10.0.0.3', namespace: 'x', name: 'b' },
    ],
    nodeAddresses: ['10.0.0.1'],
  };
  const plan = compile(input);
  const sets = new SimSets(plan.elements);
  return { plan, allows: (p: Packet) => planAllows(sets, p) };
}

test('a pod selected by no policy is open; deny-all isolates only the pods it selects', () => {
  const open = world([]);
  assert.equal(open.allows(tcp('10.0.0.4', '10.0.0.2', 80)), true);
  assert.deepEqual(open.plan.elements.isolated, []);
  const w = world([policy('x', 'deny', { podSelector: { matchLabels: { app: 'a' } } })]);
  assert.equal(w.allows(tcp('10.0.0.4', '10.0.0.2', 80)), false, 'x/a is isolated');
  assert.equal(w.allows(tcp('10.0.0.4', '10.0.0.3', 80)), true, 'x/b is not selected');
  assert.equal(w.allows(tcp('10.0.0.2', '10.0.0.4', 80)), true, 'egress of x/a is not isolated by an ingress policy');
  assert.equal(w.allows(tcp('10.0.0.1', '10.0.0.2', 80)), true, 'the node reaches its pods');
  assert.deepEqual(w.plan.pods.map((p) => [p.namespace, p.name, p.ingress, p.egress]), [['x', 'a', ['x/deny'], []]]);
});

test('policies add up: each allows its own port, together both', () => {
  const p80 = policy('x', 'p80', { podSelector: {}, ingress: [{ ports: [{ port: 80 }] }] });
  const p81 = policy('x', 'p81', { podSelector: {}, ingress: [{ ports: [{ port: 81 }] }] });
  const both = world([p80, p81]);
  assert.equal(both.allows(tcp('10.0.0.4', '10.0.0.2', 80)), true);
  assert.equal(both.allows(tcp('10.0.0.4', '10.0.0.2', 81)), true);
  assert.equal(both.allows(tcp('10.0.0.4', '10.0.0.2', 82)), false);
  assert.equal(world([p80]).allows(tcp('10.0.0.4', '10.0.0.2', 81)), false);
});

test('a named port resolves per pod; a pod that does not declare it matches nothing there and keeps its other rules', () => {
  const p = policy('x', 'named', {
    podSelector: {},
    ingress: [{ ports: [{ port: 'http' }] }, { from: [{ namespaceSelector: { matchLabels: { team: 'blue' } } }], ports: [{ port: 7000 }] }],
  });
  const w = world([p]);
  assert.equal(w.allows(tcp('10.0.0.4', '10.0.0.2', 8080)), true, 'x/a declares http=8080');
  assert.equal(w.allows(tcp('10.0.0.4', '10.0.0.2', 9090)), false, "y/a's http is not x/a's");
  assert.equal(w.allows(tcp('10.0.0.4', '10.0.0.3', 8080)), false, 'x/b declares no http');
  assert.equal(w.allows(tcp('10.0.0.4', '10.0.0.3', 7000)), true, "x/b's other rule still applies");
  assert.ok(w.plan.warnings.some((s) => s.includes('x/b') && s.includes('"http"')), w.plan.warnings.join('\n'));
  // egress: resolved on the destination
  const e = world([policy('x', 'e', { podSelector: { matchLabels: { app: 'b' } }, policyTypes: ['Egress'], egress: [{ ports: [{ port: 'http' }] }] })]);
  assert.equal(e.allows(tcp('10.0.0.3', '10.0.0.4', 9090)), true);
  assert.equal(e.allows(tcp('10.0.0.3', '10.0.0.4', 8080)), false);
  assert.equal(e.allows(tcp('10.0.0.3', '10.0.0.2', 8080)), true);
});

test('podSelector and namespaceSelector in one peer are AND; in two peers OR', () => {
  const and = world([policy('x', 'and', { podSelector: { matchLabels: { app: 'b' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'blue' } }, podSelector: { matchLabels: { app: 'b' } } }] }] })]);
  assert.equal(and.allows(tcp('10.0.0.4', '10.0.0.3', 80)), false, 'y/a is in a blue namespace but not app=b');
  const or = world([policy('x', 'or', { podSelector: { matchLabels: { app: 'b' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'blue' } } }, { podSelector: { matchLabels: { app: 'b' } } }] }] })]);
  assert.equal(or.allows(tcp('10.0.0.4', '10.0.0.3', 80)), true);
  assert.equal(or.allows(tcp('10.0.0.2', '10.0.0.3', 80)), false, 'x/a is neither in a blue namespace nor app=b');
});

test('egress is isolated only when Egress is among the policy types', () => {
  const ingressOnly = world([policy('x', 'i', { podSelector: {}, egress: [] })]);
  assert.equal(ingressOnly.allows(tcp('10.0.0.2', '10.0.0.4', 80)), true);
  const egress = world([policy('x', 'e', { podSelector: {}, egress: [{ to: [{ ipBlock: { cidr: '10.0.0.4/32' } }], ports: [{ port: 80 }] }] })]);
  assert.equal(egress.allows(tcp('10.0.0.2', '10.0.0.4', 80)), true);
  assert.equal(egress.allows(tcp('10.0.0.2', '10.0.0.4', 81)), false);
  assert.equal(egress.allows(tcp('10.0.0.4', '10.0.0.2', 81)), false, 'defaulted types include Ingress: no ingress rules, all denied');
});

test('a pod always reaches itself, even isolated both ways', () => {
  const w = world([policy('x', 'all', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] })]);
  assert.equal(w.allows(tcp('10.0.0.2', '10.0.0.2', 80)), true);
  assert.equal(w.allows(tcp('10.0.0.2', '10.0.0.3', 80)), false);
});

// ---------------------------------------------------------------- the model

test('policyTypes default: Ingress always, Egress when there are egress rules', () => {
  assert.deepEqual(pick(policy('x', 'p', { podSelector: {} })), [true, false]);
  assert.deepEqual(pick(policy('x', 'p', { podSelector: {}, egress: [{}] })), [true, true]);
  assert.deepEqual(pick(policy('x', 'p', { podSelector: {}, egress: [] })), [true, false]);
  assert.deepEqual(pick(policy('x', 'p', { podSelector: {}, policyTypes: ['Egress'], ingress: [{}] })), [false, true]);
  function pick(p: ReturnType<typeof policy>) {
    return [p.ingress, p.egress];
  }
});

test('invalid policies are refused with the object and the field named', () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ podSelector: {}, ingress: [{ ports: [{ port: 'http', endPort: 90 }] }] }, /spec\.ingress\.0\.ports\.0\.endPort: may not be set with a named port/],
    [{ podSelector: {}, ingress: [{ ports: [{ endPort: 90 }] }] }, /spec\.ingress\.0\.ports\.0\.endPort: may not be set without port/],
    [{ podSelector: {}, egress: [{ ports: [{ port: 90, endPort: 80 }] }] }, /spec\.egress\.0\.ports\.0\.endPort: must be between/],
    [{ podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8' }, podSelector: {} }] }] }, /spec\.ingress\.0\.from\.0: ipBlock may not be combined/],
    [{ podSelector: {}, ingress: [{ from: [{}] }] }, /spec\.ingress\.0\.from\.0: must specify a peer/],
    [{ podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8', except: ['11.0.0.0/16'] } }] }] }, /except\.0: must be a strict subset/],
    [{ podSelector: { matchExpressions: [{ key: 'a', operator: 'In', values: [] }] } }, /spec\.podSelector\.matchExpressions\.0\.values: must be non-empty/],
    [{ podSelector: { matchExpressions: [{ key: 'a', operator: 'Exists', values: ['x'] }] } }, /values: must be empty when operator is Exists/],
    [{ podSelector: { matchExpressions: [{ key: 'a', operator: 'Maybe' }] } }, /operator: "Maybe" is not a valid operator/],
    [{ podSelector: {}, ingress: [{ ports: [{ protocol: 'ICMP', port: 1 }] }] }, /ports\.0\.protocol: "ICMP" is not a protocol/],
    [{ podSelector: {}, policyTypes: ['Both'] }, /spec\.policyTypes\.0: "Both" is not a policy type/],
    [{ podSelector: {}, ingress: [{ ports: [{ port: 70000 }] }] }, /ports\.0\.port: 70000 is not a port/],
    [{ podSelector: {}, ingress: 'all' }, /spec\.ingress: /],
  ];
  for (const [spec, re] of cases) {
    assert.throws(() => policy('x', 'bad', spec), (e: Error) => e.message.startsWith('NetworkPolicy x/bad: ') && re.test(e.message), JSON.stringify(spec));
  }
  assert.throws(() => parseNetworkPolicy({ metadata: { name: 'n' }, spec: {} }), /metadata\.namespace: is required/);
});

test('an IPv6 ipBlock is accepted and matches nothing; an ipBlock with host bits is its network', () => {
  const p = policy('x', 'v6', { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: 'fd00::/64' } }, { ipBlock: { cidr: '10.0.0.4/30' } }] }] });
  assert.equal(p.ingressRules[0]!.peers![0]!.kind, 'ipv6');
  const w = world([p]);
  assert.equal(w.allows(tcp('10.0.0.4', '10.0.0.2', 80)), true);
  assert.equal(w.allows(tcp('10.0.0.9', '10.0.0.2', 80)), false);
});

test('pods and namespaces: defaults and refusals', () => {
  const p = parsePod({ metadata: { namespace: 'x', name: 'a' }, spec: { containers: [{ ports: [{ name: 'h', containerPort: 80 }] }] }, status: { podIPs: [{ ip: '10.0.0.2' }, { ip: 'fd00::2' }] } });
  assert.deepEqual(p.ips, ['10.0.0.2']);
  assert.deepEqual(p.ports, [{ name: 'h', port: 80, protocol: 'TCP' }]);
  assert.equal(parseNamespace({ metadata: { name: 'x' } }).labels['kubernetes.io/metadata.name'], 'x');
  assert.throws(() => parsePod({ metadata: { namespace: 'x', name: 'a' }, spec: { containers: [{ ports: [{ containerPort: 'eighty' }] }] } }), /Pod x\/a: spec\.containers\.0\.ports\.0\.containerPort/);
  assert.throws(() => parsePod({ metadata: { namespace: 'x', name: 'a' }, status: { podIP: '10.0.0.300' } }), /status\.podIPs: "10\.0\.0\.300" is not an IP address/);
});

test('a Compiler reused across inputs gives what a fresh compilation gives (policies changed, pods the same or not)', () => {
  const sorted = (e: Record<string, readonly string[]>) => Object.fromEntries(Object.entries(e).map(([k, v]) => [k, [...v].sort()]));
  fc.assert(
    fc.property(clusterArb, fc.array(policyArb, { maxLength: 3 }), fc.boolean(), (c, more, samePods) => {
      const compiler = new Compiler();
      compiler.compile(buildInput(c));
      const next = buildInput({ ...c, policies: [...c.policies.slice(0, Math.max(0, c.policies.length - 1)), ...more], pods: samePods ? c.pods : c.pods.slice(1) });
      const a = compiler.compile(next);
      const b = compile(next);
      assert.deepEqual(sorted(a.elements), sorted(b.elements));
      assert.deepEqual(a.pods, b.pods);
      assert.deepEqual(a.policies, b.policies);
      return true;
    }),
    { numRuns: 150 },
  );
});
