/**
 * Two independent answers to "does this packet pass?", for the unit tests:
 * - `referenceAllows`: the NetworkPolicy semantics written out naively from the API
 *   documentation, rule by rule, with no sets and no compilation;
 * - `planAllows`: what the kernel's ruleset (src/policy/ruleset.ts) does with the compiled
 *   elements, for the first packet of a flow (no flow state yet).
 * The compiler is right when both agree on every packet.
 */
import type { Elements } from '../../src/policy/ruleset';
import type { LabelSelector, NetworkPolicy, Pod, PolicyInput, PolicyRule } from '../../src/policy/model';

export interface Packet {
  src: string;
  dst: string;
  /** IP protocol number. */
  proto: number;
  dport: number;
}

const toNum = (s: string) => s.split('.').reduce((n, x) => n * 256 + Number(x), 0);

// ---------------------------------------------------------------- the reference

function selects(sel: LabelSelector, labels: Readonly<Record<string, string>>): boolean {
  const ok = Object.keys(sel.matchLabels).every((k) => k in labels && labels[k] === sel.matchLabels[k]);
  return (
    ok &&
    sel.matchExpressions.every((e) => {
      if (e.operator === 'In') return e.key in labels && e.values.includes(labels[e.key]!);
      if (e.operator === 'NotIn') return !(e.key in labels) || !e.values.includes(labels[e.key]!);
      if (e.operator === 'Exists') return e.key in labels;
      return !(e.key in labels);
    })
  );
}

const PROTO: Record<string, number> = { TCP: 6, UDP: 17, SCTP: 132 };

/** Whether `rule` lets `peer` (the other end) talk to `receiver`'s port, per the documentation. */
function ruleAllows(input: PolicyInput, policy: NetworkPolicy, rule: PolicyRule, peerIp: string, peerPod: Pod | undefined, receiver: Pod | undefined, p: Packet): boolean {
  const portOk =
    rule.ports === undefined ||
    rule.ports.some((rp) => {
      if (PROTO[rp.protocol] !== p.proto) return false;
      if (rp.port === undefined) return true;
      if (typeof rp.port === 'number') return p.dport >= rp.port && p.dport <= (rp.endPort ?? rp.port);
      return !!receiver && receiver.ports.some((cp) => cp.name === rp.port && cp.protocol === rp.protocol && cp.port === p.dport);
    });
  if (!portOk) return false;
  if (rule.peers === undefined) return true;
  return rule.peers.some((peer) => {
    if (peer.kind === 'ipv6') return false;
    if (peer.kind === 'ipBlock') {
      const a = toNum(peerIp);
      const inBlock = (c: { base: number; prefix: number }) => a >= c.base && a < c.base + 2 ** (32 - c.prefix);
      return inBlock(peer.cidr) && !peer.except.some(inBlock);
    }
    if (!peerPod) return false;
    const nsLabels = input.namespaces.find((n) => n.name === peerPod.namespace)?.labels ?? { 'kubernetes.io/metadata.name': peerPod.namespace };
    const nsOk = peer.namespaceSelector ? selects(peer.namespaceSelector, nsLabels) : peerPod.namespace === policy.namespace;
    return nsOk && (!peer.podSelector || selects(peer.podSelector, peerPod.labels));
  });
}

/**
 * The documented semantics. `input.pods` must give each pod its address in `ips` (local ones
 * included); a local pod is one whose address is in `input.local`.
 */
export function referenceAllows(input: PolicyInput, p: Packet): boolean {
  if (p.src === p.dst) return true;
  if (input.nodeAddresses.includes(p.src) || input.nodeAddresses.includes(p.dst)) return true;
  const live = input.pods.filter((x) => !x.hostNetwork && x.phase !== 'Succeeded' && x.phase !== 'Failed');
  const podAt = (a: string) => live.find((x) => x.ips.includes(a));
  const isLocal = (a: string) => input.local.some((l) => l.ip === a);
  const srcPod = podAt(p.src);
  const dstPod = podAt(p.dst);
  if (srcPod && isLocal(p.src)) {
    const pols = input.policies.filter((x) => x.egress && x.namespace === srcPod.namespace && selects(x.podSelector, srcPod.labels));
    if (pols.length && !pols.some((x) => x.egressRules.some((r) => ruleAllows(input, x, r, p.dst, dstPod, dstPod, p)))) return false;
  }
  if (dstPod && isLocal(p.dst)) {
    const pols = input.policies.filter((x) => x.ingress && x.namespace === dstPod.namespace && selects(x.podSelector, dstPod.labels));
    if (pols.length && !pols.some((x) => x.ingressRules.some((r) => ruleAllows(input, x, r, p.src, srcPod, dstPod, p)))) return false;
  }
  return true;
}

// ---------------------------------------------------------------- the ruleset, simulated

type Field = [number, number];

function parseField(s: string): Field {
  const [lo, hi] = s.includes('-') ? s.split('-') : [s, s];
  const n = (x: string) => (x.includes('.') ? toNum(x) : Number(x));
  return [n(lo!), n(hi!)];
}

/** Kernel set lookups over element strings (exact for hash sets, per-field ranges for interval sets). */
export class SimSets {
  private readonly exact = new Map<string, Set<string>>();
  private readonly ranges = new Map<string, Field[][]>();
  constructor(elements: Elements) {
    for (const [name, elems] of Object.entries(elements)) {
      this.exact.set(name, new Set(elems));
      this.ranges.set(name, elems.map((e) => e.split(' . ').map(parseField)));
    }
  }
  has(set: string, ...key: (string | number)[]): boolean {
    return this.exact.get(set)!.has(key.join(' . '));
  }
  inRange(set: string, ...key: (string | number)[]): boolean {
    const k = key.map((x) => (typeof x === 'string' ? toNum(x) : x));
    return this.ranges.get(set)!.some((e) => e.every(([lo, hi], i) => k[i]! >= lo && k[i]! <= hi));
  }
}

/** The first packet of a flow through the `forward`, `output` or `input` path of the ruleset. */
export function planAllows(sets: SimSets, p: Packet): boolean {
  if (sets.has('node_addrs', p.src)) return true; // output hook: the node's own frames
  if (sets.has('node_addrs', p.dst)) return true; // input hook: to the node
  if (!sets.has('isolated', p.src) && !sets.has('isolated', p.dst)) return true;
  if (sets.has('egress_isolated', p.src)) {
    const ok =
      sets.has('out_pod_any', p.src, p.dst) ||
      sets.has('out_pod_port', p.src, p.dst, p.proto, p.dport) ||
      sets.has('out_any_port', p.src, p.proto, p.dport) ||
      sets.inRange('out_range', p.src, p.dst, p.proto, p.dport);
    if (!ok) return false;
  }
  if (sets.has('ingress_isolated', p.dst)) {
    const ok =
      sets.has('in_pod_any', p.dst, p.src) ||
      sets.has('in_pod_port', p.dst, p.src, p.proto, p.dport) ||
      sets.has('in_any_port', p.dst, p.proto, p.dport) ||
      sets.inRange('in_range', p.dst, p.src, p.proto, p.dport);
    if (!ok) return false;
  }
  return true;
}
