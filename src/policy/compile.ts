/**
 * NetworkPolicy semantics, compiled: from the cluster's pods, namespaces and policies and the
 * pods local to this host, the elements of the kernel's sets (see ruleset.ts). Pure; no I/O.
 *
 * Only pods on this host get elements: their ingress (as destination) and their egress (as
 * source) are enforced here, which covers traffic across hosts too, since each end's host checks
 * its own pod. Selectors match cluster-wide.
 *
 * The semantics, as the API defines them:
 * - A pod is isolated for ingress (egress) when a policy with Ingress (Egress) in its effective
 *   policyTypes selects it; an isolated pod accepts what any of those policies' rules allows
 *   (policies add up), a pod no policy isolates accepts everything.
 * - A rule with no peers allows every source (destination); with no ports, every protocol and
 *   port. A peer with podSelector alone selects pods of the policy's namespace; with
 *   namespaceSelector alone every pod of the selected namespaces; with both, the selected pods
 *   of the selected namespaces. ipBlock matches addresses, `except` cut out.
 * - A named port is resolved on the pod that receives the traffic (the isolated pod for ingress,
 *   each destination pod for egress), by name and protocol; on a pod that does not declare it,
 *   it matches nothing (and the rest of the policy still applies).
 * - A pod can always reach itself; the node and its pods always reach each other (ruleset).
 * - hostNetwork pods and pods that have finished (Succeeded, Failed) are neither selected nor
 *   peers.
 */
import { formatIPv4, parseIPv4, parseCidr, lastOf } from '../common/ip';
import { matches } from './selector';
import { cidrMinus, disjointCover, mergeIntervals, type Box, type Interval } from './intervals';
import { PROTO_NUMBER, METADATA_NAME_LABEL, type NetworkPolicy, type Peer, type Pod, type PolicyInput, type PolicyPort, type PolicyRule, type Protocol } from './model';
import { SET_NAMES, type Elements, type SetName } from './ruleset';

/** A local pod that at least one policy selects. */
export interface SelectedPod {
  namespace: string;
  name: string;
  ip: string;
  /** Policies (namespace/name) isolating it for ingress; empty when none. */
  ingress: string[];
  egress: string[];
}

export interface PolicySummary {
  namespace: string;
  name: string;
  ingress: boolean;
  egress: boolean;
  /** Local pods it selects. */
  selected: number;
}

export interface PolicyPlan {
  /** Element strings per static set. */
  elements: Elements;
  pods: SelectedPod[];
  policies: PolicySummary[];
  /** Named ports a selected local pod does not declare, and the like; at most 50. */
  warnings: string[];
  /** Every known pod address -> "namespace/name" (for the blocked-connection log). */
  names: Map<string, string>;
}

const ALL_IPS: Interval = [0, 0xffffffff];
const ALL_PROTOS: Interval = [0, 255];
const ALL_PORTS: Interval = [0, 65535];
const EVERYTHING = Object.assign([[ALL_PROTOS, ALL_PORTS] as PortBox], { key: 'all' });
const MAX_WARNINGS = 50;

/** A pod as the compiler sees it: the API object and the addresses it holds. */
interface Known {
  pod: Pod;
  key: string;
  ips: number[];
}

/** The pods a peer selects, with their addresses; `key` identifies the selection. */
interface PeerPods {
  key: string;
  pods: Known[];
  ips: number[];
}

/** Ports of a rule, resolved for one receiving pod: protocol ranges x port ranges. */
type PortBox = readonly [Interval, Interval];
/** A rule's port boxes with a key that identifies them. */
type Boxes = PortBox[] & { key: string };

class Builder {
  readonly hash: Record<SetName, Set<string>> = Object.fromEntries(SET_NAMES.map((n) => [n, new Set<string>()])) as Record<SetName, Set<string>>;
  /** Interval boxes per (set, first key), covered disjointly at the end. */
  readonly ranges = { in_range: new Map<number, Box[]>(), out_range: new Map<number, Box[]>() };
  readonly allowAll = { ingress: new Set<number>(), egress: new Set<number>() };
  readonly warnings: string[] = [];
  private dropped = 0;

  /**
   * Elements keyed by the local pod, kept nested (local -> peer -> protocol*65536+port, all
   * small integers) until the end: many policies allow the same pairs, and nested maps of
   * integers dedupe them far cheaper than whole element strings would.
   */
  readonly podAny = { in: new Map<number, Set<number>>(), out: new Map<number, Set<number>>() };
  readonly podPort = { in: new Map<number, Map<number, Set<number>>>(), out: new Map<number, Map<number, Set<number>>>() };
  readonly anyPort = { in: new Map<number, Set<number>>(), out: new Map<number, Set<number>>() };
  /** Addresses as small integers (V8 hashes those fastest), and back. */
  private readonly index = new Map<number, number>();
  readonly addrs: number[] = [];
  ix(addr: number): number {
    let i = this.index.get(addr);
    if (i === undefined) this.index.set(addr, (i = this.addrs.push(addr) - 1));
    return i;
  }

  add(set: SetName, key: string): void {
    this.hash[set].add(key);
  }
  range(set: 'in_range' | 'out_range', key: number, box: Box): void {
    const m = this.ranges[set];
    (m.get(key) ?? m.set(key, []).get(key)!).push(box);
  }
  warn(s: string): void {
    if (this.warnings.length < MAX_WARNINGS) this.warnings.push(s);
    else this.dropped++;
  }
  finish(): string[] {
    return this.dropped ? [...this.warnings, `(${this.dropped} more)`] : this.warnings;
  }
}

/** Formatting addresses is most of the compiler's work on big clusters: once per address. */
const ipText = new Map<number, string>();
function ip(n: number): string {
  let s = ipText.get(n);
  if (s === undefined) {
    if (ipText.size > 1_000_000) ipText.clear();
    ipText.set(n, (s = formatIPv4(n)));
  }
  return s;
}
/** Dotted quads the model already validated; anything else is undefined. */
function num(s: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return parseIPv4(s);
  const [a, b, c, d] = [Number(m[1]), Number(m[2]), Number(m[3]), Number(m[4])];
  return a > 255 || b > 255 || c > 255 || d > 255 ? undefined : ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
}
const pk = (pb: PortBox) => pb[0][0] * 65536 + pb[1][0];
const pkText = (k: number) => `${Math.floor(k / 65536)} . ${k % 65536}`;
function inner<K, V>(m: Map<K, V>, k: K, make: () => V): V {
  let v = m.get(k);
  if (v === undefined) m.set(k, (v = make()));
  return v;
}
const iv = ([lo, hi]: Interval, fmt: (n: number) => string | number = (n) => n) => (lo === hi ? `${fmt(lo)}` : `${fmt(lo)}-${fmt(hi)}`);

export function compile(input: PolicyInput): PolicyPlan {
  const b = new Builder();
  const nsLabels = new Map(input.namespaces.map((n) => [n.name, n.labels]));
  const labelsOfNs = (ns: string) => nsLabels.get(ns) ?? { [METADATA_NAME_LABEL]: ns };

  // who holds which address: a local attachment is the freshest word on its own address
  const localByIp = new Map(input.local.map((l) => [l.ip, l]));
  const localKeyIp = new Map<string, string>();
  for (const l of input.local) if (l.namespace && l.name) localKeyIp.set(`${l.namespace}/${l.name}`, l.ip);
  const known: Known[] = [];
  for (const pod of input.pods) {
    if (pod.hostNetwork || pod.phase === 'Succeeded' || pod.phase === 'Failed') continue;
    const key = `${pod.namespace}/${pod.name}`;
    const ips = new Set<string>();
    for (const a of pod.ips) {
      const l = localByIp.get(a);
      if (!l || !l.namespace || !l.name || (l.namespace === pod.namespace && l.name === pod.name)) ips.add(a);
    }
    const mine = localKeyIp.get(key);
    if (mine) ips.add(mine);
    known.push({ pod, key, ips: [...ips].map(num).filter((n): n is number => n !== undefined) });
  }
  const names = new Map<string, string>();
  for (const k of known) for (const a of k.ips) names.set(ip(a), k.key);
  const localIps = new Set([...localByIp.keys()].map(num).filter((n): n is number => n !== undefined));
  const localPods = known.filter((k) => k.ips.some((a) => localIps.has(a)));

  // peers resolve to the same pods for every target and often for many policies: once per content
  const namespaceNames = [...new Set([...input.namespaces.map((n) => n.name), ...known.map((k) => k.pod.namespace)])];
  const peerKeys = new WeakMap<object, string>();
  const peerCache = new Map<string, PeerPods>();
  const podsOf = (policy: NetworkPolicy, peer: Extract<Peer, { kind: 'pods' }>): PeerPods => {
    let key = peerKeys.get(peer);
    if (key === undefined) {
      key = `${peer.namespaceSelector ? JSON.stringify(peer.namespaceSelector) : `=${policy.namespace}`}|${JSON.stringify(peer.podSelector ?? null)}`;
      peerKeys.set(peer, key);
    }
    const hit = peerCache.get(key);
    if (hit) return hit;
    const nsSel = peer.namespaceSelector;
    const nsOk = new Set(nsSel ? namespaceNames.filter((ns) => matches(nsSel, labelsOfNs(ns))) : [policy.namespace]);
    const pods = known.filter((k) => nsOk.has(k.pod.namespace) && (!peer.podSelector || matches(peer.podSelector, k.pod.labels)));
    const out = { key: `p${peerCache.size}`, pods, ips: pods.flatMap((k) => k.ips) };
    peerCache.set(key, out);
    return out;
  };

  // many policies repeat the same (local pod, peers, ports): each such triple is added once
  const done = new Set<string>();
  const once = (k: string) => !done.has(k) && !!done.add(k);
  /** Pod peers with numeric (or resolved) ports for one local pod. */
  const addPeers = (dir: 'in' | 'out', local: number, peers: PeerPods, boxes: Boxes) => {
    if (!boxes.length || !once(`${dir}|${local}|${peers.key}|${boxes.key}`)) return;
    const l = b.ix(local);
    const points: number[] = [];
    for (const pb of boxes) {
      if (isAll(pb)) {
        const set = inner(b.podAny[dir], l, () => new Set<number>());
        for (const a of peers.ips) set.add(b.ix(a));
      } else if (isPoint(pb)) points.push(pk(pb));
      else for (const a of peers.ips) b.range(`${dir}_range`, local, [[a, a], ...pb]);
    }
    if (points.length) {
      const m = inner(b.podPort[dir], l, () => new Map<number, Set<number>>());
      for (const a of peers.ips) {
        const set = inner(m, b.ix(a), () => new Set<number>());
        for (const x of points) set.add(x);
      }
    }
  };
  /** An ipBlock's addresses with ports, for one local pod. */
  const spansCache = new Map<object, Interval[] & { key: string }>();
  const spansOf = (peer: Extract<Peer, { kind: 'ipBlock' }>) => {
    let spans = spansCache.get(peer);
    if (!spans) spansCache.set(peer, (spans = Object.assign(cidrMinus(peer.cidr, peer.except), { key: '' })));
    spans.key ||= `s${spansCache.size}`;
    return spans;
  };
  const addBlock = (dir: 'in' | 'out', local: number, spans: Interval[] & { key: string }, boxes: Boxes) => {
    if (!boxes.length || !once(`${dir}|${local}|${spans.key}|${boxes.key}`)) return;
    for (const span of spans) for (const pb of boxes) b.range(`${dir}_range`, local, [span, ...pb]);
  };

  /** The protocol x port boxes of `ports` as received by `on` (named ports resolved there); undefined ports: everything. */
  // numeric ports are the same for every pod: their boxes are made once per list
  const numericBoxes = new WeakMap<object, Boxes>();
  const boxIds = new Map<string, string>();
  const portBoxes = (ports: readonly PolicyPort[] | undefined, on: Pod | undefined): Boxes => {
    if (!ports) return EVERYTHING;
    const numeric = !ports.some((p) => typeof p.port === 'string');
    const hit = numeric ? numericBoxes.get(ports) : undefined;
    if (hit) return hit;
    const out: PortBox[] = [];
    for (const p of ports) {
      const proto: Interval = [PROTO_NUMBER[p.protocol], PROTO_NUMBER[p.protocol]];
      if (p.port === undefined) out.push([proto, ALL_PORTS]);
      else if (typeof p.port === 'number') out.push([proto, [p.port, p.endPort ?? p.port]]);
      else if (on) for (const n of namedPort(on, p.port, p.protocol)) out.push([proto, [n, n]]);
    }
    const text = out.map((x) => `${x[0][0]}-${x[0][1]}:${x[1][0]}-${x[1][1]}`).join(',');
    let id = boxIds.get(text);
    if (id === undefined) boxIds.set(text, (id = `b${boxIds.size}`));
    const boxes = Object.assign(out, { key: id });
    if (numeric) numericBoxes.set(ports, boxes);
    return boxes;
  };

  /** A rule's ports split into named and numeric ones, once per rule. */
  const splits = new WeakMap<PolicyRule, { named: PolicyPort[]; numeric?: PolicyPort[] }>();
  function split(rule: PolicyRule) {
    let v = splits.get(rule);
    if (!v) splits.set(rule, (v = { named: (rule.ports ?? []).filter((p) => typeof p.port === 'string'), numeric: rule.ports?.filter((p) => typeof p.port !== 'string') }));
    return v;
  }

  const policies: PolicySummary[] = [];
  const selected = new Map<number, SelectedPod>();
  for (const policy of input.policies) {
    const pkey = `${policy.namespace}/${policy.name}`;
    const targets = localPods.filter((k) => k.pod.namespace === policy.namespace && matches(policy.podSelector, k.pod.labels));
    policies.push({ namespace: policy.namespace, name: policy.name, ingress: policy.ingress, egress: policy.egress, selected: targets.length });
    for (const t of targets) {
      for (const a of t.ips.filter((x) => localIps.has(x))) {
        const sp = selected.get(a) ?? selected.set(a, { namespace: t.pod.namespace, name: t.pod.name, ip: ip(a), ingress: [], egress: [] }).get(a)!;
        if (policy.ingress) {
          sp.ingress.push(pkey);
          for (const r of policy.ingressRules) ingressRule(a, t, r, policy);
        }
        if (policy.egress) {
          sp.egress.push(pkey);
          for (const r of policy.egressRules) egressRule(a, r, policy);
        }
      }
    }
  }

  function ingressRule(dst: number, t: Known, rule: PolicyRule, policy: NetworkPolicy): void {
    const boxes = portBoxes(rule.ports, t.pod);
    if (rule.ports) warnUndeclared(rule.ports, t.pod, policy);
    if (!rule.peers) {
      for (const pb of boxes) {
        if (isAll(pb)) b.allowAll.ingress.add(dst);
        else if (isPoint(pb)) inner(b.anyPort.in, b.ix(dst), () => new Set<number>()).add(pk(pb));
        else b.range('in_range', dst, [ALL_IPS, ...pb]);
      }
      return;
    }
    for (const peer of rule.peers) {
      if (peer.kind === 'pods') {
        addPeers('in', dst, podsOf(policy, peer), boxes);
      } else if (peer.kind === 'ipBlock') {
        addBlock('in', dst, spansOf(peer), boxes);
      }
    }
  }

  function egressRule(src: number, rule: PolicyRule, policy: NetworkPolicy): void {
    // numeric ports are the same for every destination; named ones resolve on each destination pod
    const { named, numeric } = split(rule);
    const numBoxes = portBoxes(numeric, undefined);
    const toPod = (q: Known, within?: readonly Interval[]) => {
      const boxes = named.length ? portBoxes(named, q.pod) : [];
      for (const dst of q.ips) {
        if (within && !within.some(([lo, hi]) => dst >= lo && dst <= hi)) continue;
        for (const pb of boxes) podElement('out', src, dst, pb);
      }
    };
    if (!rule.peers) {
      for (const pb of numBoxes) {
        if (isAll(pb)) b.allowAll.egress.add(src);
        else if (isPoint(pb)) inner(b.anyPort.out, b.ix(src), () => new Set<number>()).add(pk(pb));
        else b.range('out_range', src, [ALL_IPS, ...pb]);
      }
      if (named.length) for (const q of known) toPod(q);
      return;
    }
    for (const peer of rule.peers) {
      if (peer.kind === 'pods') {
        const peers = podsOf(policy, peer);
        addPeers('out', src, peers, numBoxes);
        if (named.length) for (const q of peers.pods) toPod(q);
      } else if (peer.kind === 'ipBlock') {
        const spans = spansOf(peer);
        addBlock('out', src, spans, numBoxes);
        // a named port in an ipBlock means the pods inside it that declare the name
        if (named.length) for (const q of known) toPod(q, spans);
      }
    }
  }

  /** One allowed (local, peer pod) pair: a hash element when it is one port or all, else a box. */
  function podElement(dir: 'in' | 'out', local: number, peer: number, pb: PortBox): void {
    if (isAll(pb)) inner(b.podAny[dir], b.ix(local), () => new Set<number>()).add(b.ix(peer));
    else if (isPoint(pb)) inner(inner(b.podPort[dir], b.ix(local), () => new Map<number, Set<number>>()), b.ix(peer), () => new Set<number>()).add(pk(pb));
    else b.range(`${dir}_range`, local, [[peer, peer], ...pb]);
  }

  function warnUndeclared(ports: readonly PolicyPort[], pod: Pod, policy: NetworkPolicy): void {
    for (const p of ports) {
      if (typeof p.port === 'string' && namedPort(pod, p.port, p.protocol).length === 0) {
        b.warn(`NetworkPolicy ${policy.namespace}/${policy.name}: pod ${pod.namespace}/${pod.name} declares no ${p.protocol} port named "${p.port}": that port matches nothing there`);
      }
    }
  }

  // isolation: a pod allowed everything in a direction is not isolated in it
  const ingressIso = new Set<number>();
  const egressIso = new Set<number>();
  for (const [a, sp] of selected) {
    if (sp.ingress.length && !b.allowAll.ingress.has(a)) ingressIso.add(a);
    if (sp.egress.length && !b.allowAll.egress.has(a)) egressIso.add(a);
  }
  for (const a of ingressIso) {
    b.add('ingress_isolated', ip(a));
    inner(b.podAny.in, b.ix(a), () => new Set<number>()).add(b.ix(a)); // a pod always reaches itself
  }
  for (const a of egressIso) {
    b.add('egress_isolated', ip(a));
    inner(b.podAny.out, b.ix(a), () => new Set<number>()).add(b.ix(a));
  }
  for (const a of new Set([...ingressIso, ...egressIso])) b.add('isolated', ip(a));
  for (const a of input.nodeAddresses) if (num(a) !== undefined) b.add('node_addrs', a);
  const exempt = mergeIntervals((input.exempt ?? []).map((c) => parseCidr(c)).filter((c) => c !== undefined).map((c) => [c.base, lastOf(c)] as const));
  for (const span of exempt) b.add('exempt', iv(span, ip));

  for (const [set, iso] of [['in_range', ingressIso], ['out_range', egressIso]] as const) {
    for (const [key, boxes] of b.ranges[set]) {
      if (!iso.has(key)) continue;
      for (const [addrs, protos, ports] of disjointCover(boxes)) b.add(set, `${ip(key)} . ${iv(addrs!, ip)} . ${iv(protos!)} . ${iv(ports!)}`);
    }
  }
  // flatten, leaving out pods that turned out not isolated in that direction
  // (each nested entry is unique already: plain arrays, no set of strings needed)
  const flat = Object.fromEntries(SET_NAMES.map((n) => [n, [...b.hash[n]]])) as Record<SetName, string[]>;
  for (const [dir, iso] of [['in', ingressIso], ['out', egressIso]] as const) {
    const at = (i: number) => ip(b.addrs[i]!);
    const any = flat[`${dir}_pod_any`];
    const port = flat[`${dir}_pod_port`];
    const anyPort = flat[`${dir}_any_port`];
    for (const [local, peers] of b.podAny[dir]) if (iso.has(b.addrs[local]!)) for (const peer of peers) any.push(`${at(local)} . ${at(peer)}`);
    for (const [local, peers] of b.podPort[dir]) {
      if (!iso.has(b.addrs[local]!)) continue;
      const l = at(local);
      for (const [peer, ports] of peers) {
        const lp = `${l} . ${at(peer)} . `;
        for (const k of ports) port.push(lp + pkText(k));
      }
    }
    for (const [local, ports] of b.anyPort[dir]) if (iso.has(b.addrs[local]!)) for (const k of ports) anyPort.push(`${at(local)} . ${pkText(k)}`);
  }
  // in the order made (deterministic for a given input); sorting 30 000 strings costs more than it tells
  const elements = flat as unknown as Elements;
  return {
    elements,
    pods: [...selected.values()].sort((x, y) => (x.namespace + x.name).localeCompare(y.namespace + y.name)),
    policies,
    warnings: b.finish(),
    names,
  };
}

const isAll = (pb: PortBox) => pb[0][0] === ALL_PROTOS[0] && pb[0][1] === ALL_PROTOS[1] && pb[1][0] === ALL_PORTS[0] && pb[1][1] === ALL_PORTS[1];
const isPoint = (pb: PortBox) => pb[0][0] === pb[0][1] && pb[1][0] === pb[1][1];

/** The numbers a pod's containers give to a port name, for one protocol. */
export function namedPort(pod: Pod, name: string, protocol: Protocol): number[] {
  return [...new Set(pod.ports.filter((p) => p.name === name && p.protocol === protocol).map((p) => p.port))];
}
