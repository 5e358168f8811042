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

