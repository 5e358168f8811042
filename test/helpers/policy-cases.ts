/**
 * The upstream NetworkPolicy e2e layout for the policy tests: namespaces x, y, z labelled
 * ns=NAME; pods a, b, c in each labelled pod=NAME (the c pods also tier=db), at
 * 10.77.0.(10*ns+pod); every pod serving ports 80 and 81 over TCP, UDP and SCTP and declaring
 * them as serve-PORT-PROTO, except x/b, which declares only its TCP ports. A case is a list of
 * policies and the truth table they should give, built from "everything connects".
 */
import assert from 'node:assert/strict';
import { specName, SUBNET, type PolicyLab, type PortSpec } from './policy-lab';
import { compare, formatTruth, Truth } from '../../src/policy/matrix';

/** Where a case runs: the engine test bed (PolicyLab) or real routers fed by the API (KubePolicyBed). */
export interface MatrixBed {
  readonly pods: readonly { key: string }[];
  /** Makes every host enforce exactly these policies; resolves once they do. */
  apply(policies: readonly unknown[]): Promise<void>;
  /** Empties the hosts' flow sets (see PolicyLab.forgetFlows). */
  forgetFlows(): void;
  matrix(specs: readonly PortSpec[], expected?: ReadonlyMap<string, Truth>): Promise<Map<string, Truth>>;
}

export const NS = ['x', 'y', 'z'];
export const NAMES = ['a', 'b', 'c'];
export const TCP_UDP: PortSpec[] = [
  { protocol: 'tcp', port: 80 },
  { protocol: 'tcp', port: 81 },
  { protocol: 'udp', port: 80 },
  { protocol: 'udp', port: 81 },
];
export const SCTP: PortSpec[] = [
  { protocol: 'sctp', port: 80 },
  { protocol: 'sctp', port: 81 },
];
export const ipOf = (key: string) => `${SUBNET}.${10 * (NS.indexOf(key[0]!) + 1) + NAMES.indexOf(key[2]!)}`;
export const portsOf = (key: string) =>
  // x/b declares only its TCP ports: named UDP ports match nothing on it
  (key === 'x/b' ? TCP_UDP.filter((s) => s.protocol === 'tcp') : [...TCP_UDP, ...SCTP]).map((s) => ({ name: `serve-${s.port}-${s.protocol}`, containerPort: s.port, protocol: s.protocol.toUpperCase() }));

/** A NetworkPolicy object. */
export const np = (namespace: string, name: string, spec: Record<string, unknown>) => ({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { namespace, name }, spec });
export const sel = (labels: Record<string, string>) => ({ matchLabels: labels });

export type Expect = (t: Truth, spec: PortSpec) => void;

export interface Case {
  name: string;
  policies: unknown[];
  expect: Expect;
  specs?: PortSpec[];
}

export const inNs = (ns: string) => (p: string) => p.startsWith(`${ns}/`);

/** A case whose policies may name pods' addresses (known once the pods are attached: `ip` gives them). */
export interface IpCase extends Omit<Case, 'policies'> {
  policies: (ip: (key: string) => string) => unknown[];
}

/** The cases every bed runs (one host, and real routers fed by the API); each bed adds its own. */
export const SHARED_CASES: IpCase[] = [
  { name: 'deny-all ingress in x', policies: () => [np('x', 'deny-all', { podSelector: {} })], expect: (t) => t.ingress(inNs('x'), false) },
  { name: 'deny-all egress in x', policies: () => [np('x', 'deny-all-egress', { podSelector: {}, policyTypes: ['Egress'] })], expect: (t) => t.egress(inNs('x'), false) },
  {
    name: 'allow-all ingress next to a deny-all: policies add up',
    policies: () => [np('x', 'deny-all', { podSelector: {} }), np('x', 'allow-all', { podSelector: {}, ingress: [{}] })],
    expect: () => undefined,
  },
  {
    name: 'podSelector matchLabels: x/a accepts x/b only',
    policies: () => [np('x', 'allow-b', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ podSelector: sel({ pod: 'b' }) }] }] })],
    expect: (t) => t.ingress('x/a', false).set('x/b', 'x/a', true),
  },
  {
    name: 'namespaceSelector matchLabels: x/a accepts every pod of y',
    policies: () => [np('x', 'allow-y', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel({ ns: 'y' }) }] }] })],
    expect: (t) => t.ingress('x/a', false).where((f, to) => to === 'x/a' && inNs('y')(f), true),
  },
  {
    name: 'namespaceSelector and podSelector in one peer: both must hold',
    policies: () => [np('x', 'and', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel({ ns: 'y' }), podSelector: sel({ pod: 'b' }) }] }] })],
    expect: (t) => t.ingress('x/a', false).set('y/b', 'x/a', true),
  },
  {
    name: 'namespaceSelector and podSelector as two peers: either is enough',
    policies: () => [np('x', 'or', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel({ ns: 'y' }) }, { podSelector: sel({ pod: 'b' }) }] }] })],
    expect: (t) => t.ingress('x/a', false).where((f, to) => to === 'x/a' && (inNs('y')(f) || f === 'x/b'), true),
  },
  {
    name: 'matchExpressions In (targets) and NotIn (namespaces)',
    policies: () => [
      np('x', 'expr', {
        podSelector: { matchExpressions: [{ key: 'pod', operator: 'In', values: ['a', 'b'] }] },
        ingress: [{ from: [{ namespaceSelector: { matchExpressions: [{ key: 'ns', operator: 'NotIn', values: ['y'] }] } }] }],
      }),
    ],
    expect: (t) => t.ingress((p) => p === 'x/a' || p === 'x/b', false).where((f, to) => (to === 'x/a' || to === 'x/b') && !inNs('y')(f), true),
  },
  {
    name: 'matchExpressions Exists and DoesNotExist (the c pods carry tier=db)',
    policies: () => [
      np('z', 'exists', {
        podSelector: { matchExpressions: [{ key: 'tier', operator: 'Exists' }] },
        ingress: [{ from: [{ namespaceSelector: {}, podSelector: { matchExpressions: [{ key: 'tier', operator: 'DoesNotExist' }] } }] }],
      }),
    ],
    expect: (t) => t.ingress('z/c', false).where((f, to) => to === 'z/c' && !f.endsWith('/c'), true),
  },
  {
    name: 'numeric port: TCP 80 only',
    policies: () => [np('x', 'tcp80', { podSelector: sel({ pod: 'a' }), ingress: [{ ports: [{ port: 80 }] }] })],
    expect: (t, s) => t.ingress('x/a', s.protocol === 'tcp' && s.port === 80),
  },
  {
    name: 'UDP 81 only',
    policies: () => [np('y', 'udp81', { podSelector: sel({ pod: 'b' }), ingress: [{ ports: [{ protocol: 'UDP', port: 81 }] }] })],
    expect: (t, s) => t.ingress('y/b', s.protocol === 'udp' && s.port === 81),
  },
  {
    name: 'named port: serve-81-tcp, resolved on the receiving pod',
    policies: () => [np('x', 'named', { podSelector: sel({ pod: 'a' }), ingress: [{ ports: [{ port: 'serve-81-tcp' }] }] })],
    expect: (t, s) => t.ingress('x/a', s.protocol === 'tcp' && s.port === 81),
  },
  {
    name: 'a named port a pod does not declare matches nothing there and breaks nothing',
    policies: () => [
      np('x', 'named-udp', {
        podSelector: { matchExpressions: [{ key: 'pod', operator: 'In', values: ['a', 'b'] }] },
        ingress: [{ ports: [{ port: 'serve-81-udp', protocol: 'UDP' }] }, { from: [{ podSelector: sel({ pod: 'c' }) }] }],
      }),
    ],
    // x/a declares serve-81-udp; x/b does not (its UDP 81 server runs all the same): closed to all but x/c
    expect: (t, s) => t.ingress('x/a', s.protocol === 'udp' && s.port === 81).ingress('x/b', false).set('x/c', 'x/a', true).set('x/c', 'x/b', true),
  },
  {
    name: 'endPort: TCP 80-81, UDP 81-90',
    policies: () => [np('x', 'range', { podSelector: sel({ pod: 'a' }), ingress: [{ ports: [{ port: 80, endPort: 81 }, { protocol: 'UDP', port: 81, endPort: 90 }] }] })],
    expect: (t, s) => t.ingress('x/a', s.protocol === 'tcp' || s.port === 81),
  },
  {
    name: 'SCTP 80 by number; SCTP 81 by name from y only',
    policies: () => [
      np('x', 'sctp', {
        podSelector: sel({ pod: 'a' }),
        ingress: [{ ports: [{ protocol: 'SCTP', port: 80 }] }, { from: [{ namespaceSelector: sel({ ns: 'y' }) }], ports: [{ protocol: 'SCTP', port: 'serve-81-sctp' }] }],
      }),
    ],
    specs: [...SCTP, { protocol: 'tcp', port: 80 }],
    expect: (t, s) => t.ingress('x/a', s.protocol === 'sctp' && s.port === 80).where((f, to) => to === 'x/a' && s.protocol === 'sctp' && inNs('y')(f), true),
  },
  {
    name: 'egress to a namespace',
    policies: () => [np('x', 'to-y', { podSelector: sel({ pod: 'a' }), policyTypes: ['Egress'], egress: [{ to: [{ namespaceSelector: sel({ ns: 'y' }) }] }] })],
    expect: (t) => t.egress('x/a', false).where((f, to) => f === 'x/a' && inNs('y')(to), true),
  },
  {
    name: 'egress by named port resolves on each destination pod',
    policies: () => [np('z', 'to-named', { podSelector: sel({ pod: 'b' }), policyTypes: ['Egress'], egress: [{ to: [{ namespaceSelector: {} }], ports: [{ protocol: 'UDP', port: 'serve-80-udp' }] }] })],
    // x/b does not declare serve-80-udp
    expect: (t, s) => t.egress('z/b', false).where((f, to) => f === 'z/b' && s.protocol === 'udp' && s.port === 80 && to !== 'x/b', true),
  },
  {
    name: 'ingress and egress isolated together: replies of allowed connections pass both ways',
    policies: () => [
      np('x', 'both', {
        podSelector: sel({ pod: 'a' }),
        policyTypes: ['Ingress', 'Egress'],
        ingress: [{ from: [{ namespaceSelector: sel({ ns: 'y' }) }] }],
        egress: [{ to: [{ namespaceSelector: sel({ ns: 'z' }) }], ports: [{ port: 80 }] }],
      }),
    ],
    expect: (t, s) => t.ingress('x/a', false).egress('x/a', false).where((f, to) => (to === 'x/a' && inNs('y')(f)) || (f === 'x/a' && inNs('z')(to) && s.protocol === 'tcp' && s.port === 80), true),
  },
  {
    name: 'several policies add up, each its own port and peers',
    policies: () => [
      np('x', 'p80-from-y', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel({ ns: 'y' }) }], ports: [{ port: 80 }] }] }),
      np('x', 'p81-from-z', { podSelector: sel({ pod: 'a' }), ingress: [{ from: [{ namespaceSelector: sel({ ns: 'z' }) }], ports: [{ port: 81 }] }] }),
      np('x', 'udp-from-x', { podSelector: {}, ingress: [{ from: [{ podSelector: {} }], ports: [{ protocol: 'UDP' }] }] }),
    ],
    expect: (t, s) =>
      t.ingress(inNs('x'), false).where((f, to) => {
        if (s.protocol === 'udp') return inNs('x')(to) && inNs('x')(f);
        return to === 'x/a' && ((s.port === 80 && inNs('y')(f)) || (s.port === 81 && inNs('z')(f)));
      }, true),
  },
];

/** Adds the nine pods (on the host `hostOf` says) and starts their servers. */
export async function upstreamLayout(lab: PolicyLab, hostOf: (key: string) => number): Promise<void> {
  for (const ns of NS) lab.namespaceLabels.set(ns, { ns });
  for (const key of NS.flatMap((n) => NAMES.map((p) => `${n}/${p}`))) {
    const [ns, name] = key.split('/') as [string, string];
    lab.addPod(hostOf(key), ns, name, ipOf(key), { pod: name, ...(name === 'c' ? { tier: 'db' } : {}) }, portsOf(key));
  }
  await Promise.all(lab.pods.map((p) => lab.serve(p, [...TCP_UDP, ...SCTP])));
}

/** Applies the case's policies on every host, probes the full matrix per port, compares. */
export async function check(lab: MatrixBed, c: Case): Promise<void> {
  await lab.apply(c.policies);
  lab.forgetFlows();
  const specs = c.specs ?? TCP_UDP;
  const keys = lab.pods.map((p) => p.key);
  const expected = new Map(
    specs.map((s) => {
      const t = new Truth(keys);
      c.expect(t, s);
      return [specName(s), t.loopback()];
    }),
  );
  const observed = await lab.matrix(specs, expected);
  const report: string[] = [];
  for (const s of specs) {
    const e = expected.get(specName(s))!;
    const o = observed.get(specName(s))!;
    if (compare(e, o).length) report.push(`observed (! = differs from expected):\n${formatTruth(o, specName(s), e)}expected:\n${formatTruth(e, specName(s))}`);
  }
  assert.equal(report.length, 0, `${c.name}\n${report.join('\n')}`);
}

