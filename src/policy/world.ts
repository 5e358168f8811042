/**
 * The cluster as one compilation sees it (pods with their addresses, namespaces, which pods are
 * on this host), and what each policy means in it: a list of operations on a Sink.
 *
 * Why it is this way: working out a policy (its targets, its peers' pods, its ports on each
 * target) is most of the compiler's work, and while the pods stay as they are, a policy that did
 * not change means the same thing. The World keeps each policy's operations, so a change of one
 * policy among hundreds costs the work of that one; the operations of all are then replayed
 * into a fresh Sink, which is cheap.
 */
import { matches } from './selector';
import { cidrMinus, type Interval } from './intervals';
import { METADATA_NAME_LABEL, PROTO_NUMBER, type NetworkPolicy, type Peer, type Pod, type PolicyInput, type PolicyPort, type PolicyRule, type Protocol } from './model';
import { ALL_PORTS, EVERYTHING, ip, num, type Boxes, type PortBox, type Sink, type Spans } from './sink';

export type Op = (s: Sink) => void;

/** A pod as the compiler sees it: the API object and the addresses it holds. */
interface Known {
  pod: Pod;
  key: string;
  ips: number[];
  /** Index among known pods (identifies it in dedupe keys). */
  n: number;
}

/** The pods a peer selects, with their addresses; `key` identifies the selection. */
interface PeerPods {
  key: string;
  pods: Known[];
  ips: number[];
}

/** The numbers a pod's containers give to a port name, for one protocol. */
export function namedPort(pod: Pod, name: string, protocol: Protocol): number[] {
  return [...new Set(pod.ports.filter((p) => p.name === name && p.protocol === protocol).map((p) => p.port))];
}

/** What a World depends on: compilations with equal keys see the same cluster. */
export function worldKey(input: PolicyInput): string {
  return JSON.stringify([input.pods, input.namespaces, input.local]);
}

export class World {
  readonly known: Known[] = [];
  /** Every known pod address -> "namespace/name". */
  readonly names = new Map<string, string>();
  private readonly localIps: Set<number>;
  private readonly localPods: Known[];
  private readonly nsLabels: Map<string, Readonly<Record<string, string>>>;
  private readonly namespaceNames: string[];
  private readonly peerKeys = new WeakMap<object, string>();
  private readonly peerCache = new Map<string, PeerPods>();
  private readonly spansCache = new Map<object, Spans>();
  private readonly numericBoxes = new WeakMap<object, Boxes>();
  private readonly boxIds = new Map<string, string>();
  private readonly splits = new WeakMap<PolicyRule, { named: PolicyPort[]; numeric?: PolicyPort[] }>();
  private readonly opsCache = new Map<string, Op[]>();
  private readonly ids = new Map<string, number>();

  /** A small number for a dedupe key (Sink keeps numbers, hashed faster than strings). */
  id(key: string): number {
    let n = this.ids.get(key);
    if (n === undefined) this.ids.set(key, (n = this.ids.size));
    return n;
  }

  constructor(input: PolicyInput) {
    this.nsLabels = new Map(input.namespaces.map((n) => [n.name, n.labels]));
    // who holds which address: a local attachment is the freshest word on its own address
    const localByIp = new Map(input.local.map((l) => [l.ip, l]));
    const localKeyIp = new Map<string, string>();
    for (const l of input.local) if (l.namespace && l.name) localKeyIp.set(`${l.namespace}/${l.name}`, l.ip);
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
      this.known.push({ pod, key, ips: [...ips].map(num).filter((n): n is number => n !== undefined), n: this.known.length });
    }
    for (const k of this.known) for (const a of k.ips) this.names.set(ip(a), k.key);
    this.localIps = new Set([...localByIp.keys()].map(num).filter((n): n is number => n !== undefined));
    this.localPods = this.known.filter((k) => k.ips.some((a) => this.localIps.has(a)));
    this.namespaceNames = [...new Set([...input.namespaces.map((n) => n.name), ...this.known.map((k) => k.pod.namespace)])];
  }

  /** What `policy` means here, as operations on a Sink (worked out once per policy content). */
  ops(policy: NetworkPolicy): Op[] {
    const key = JSON.stringify(policy);
    let ops = this.opsCache.get(key);
    if (!ops) this.opsCache.set(key, (ops = this.work(policy)));
    return ops;
  }

  private work(policy: NetworkPolicy): Op[] {
    const ops: Op[] = [];
    const pkey = `${policy.namespace}/${policy.name}`;
    const targets = this.localPods.filter((k) => k.pod.namespace === policy.namespace && matches(policy.podSelector, k.pod.labels));
    const summary = { namespace: policy.namespace, name: policy.name, ingress: policy.ingress, egress: policy.egress, selected: targets.length };
    ops.push((s) => s.policies.push(summary));
    for (const t of targets) {
      for (const a of t.ips.filter((x) => this.localIps.has(x))) {
        ops.push((s) => s.select(a, t.pod.namespace, t.pod.name, pkey, policy.ingress, policy.egress));
        if (policy.ingress) for (const r of policy.ingressRules) this.ingressRule(ops, a, t, r, policy);
        if (policy.egress) for (const r of policy.egressRules) this.egressRule(ops, a, r, policy);
      }
    }
    return ops;
  }

  private ingressRule(ops: Op[], dst: number, t: Known, rule: PolicyRule, policy: NetworkPolicy): void {
    const boxes = this.portBoxes(rule.ports, t.pod);
    for (const p of rule.ports ?? []) {
      if (typeof p.port === 'string' && namedPort(t.pod, p.port, p.protocol).length === 0) {
        const msg = `NetworkPolicy ${policy.namespace}/${policy.name}: pod ${t.key} declares no ${p.protocol} port named "${p.port}": that port matches nothing there`;
        ops.push((s) => s.warn(msg));
      }
    }
    if (!rule.peers) {
      ops.push((s) => s.anyone('in', dst, boxes));
      return;
    }
    for (const peer of rule.peers) {
      if (peer.kind === 'pods') {
        const peers = this.podsOf(policy, peer);
        const key = this.id(`in|${dst}|${peers.key}|${boxes.key}`);
        ops.push((s) => s.peers(key, 'in', dst, peers.ips, boxes));
      } else if (peer.kind === 'ipBlock') {
        const spans = this.spansOf(peer);
        const key = this.id(`in|${dst}|${spans.key}|${boxes.key}`);
        ops.push((s) => s.block(key, 'in', dst, spans, boxes));
      }
    }
  }

  private egressRule(ops: Op[], src: number, rule: PolicyRule, policy: NetworkPolicy): void {
    // numeric ports are the same for every destination; named ones resolve on each destination pod
    const { named, numeric } = this.split(rule);
    const numBoxes = this.portBoxes(numeric, undefined);
    const toPod = (q: Known, within?: Spans) => {
      const boxes = this.portBoxes(named, q.pod);
      const ips = within ? q.ips.filter((a) => within.some(([lo, hi]) => a >= lo && a <= hi)) : q.ips;
      const key = this.id(`out|${src}|q${q.n}${within ? `|${within.key}` : ''}|${boxes.key}`);
      if (boxes.length && ips.length) ops.push((s) => s.peers(key, 'out', src, ips, boxes));
    };
    if (!rule.peers) {
      ops.push((s) => s.anyone('out', src, numBoxes));
      if (named.length) for (const q of this.known) toPod(q);
      return;
    }
    for (const peer of rule.peers) {
      if (peer.kind === 'pods') {
        const peers = this.podsOf(policy, peer);
        const key = this.id(`out|${src}|${peers.key}|${numBoxes.key}`);
        ops.push((s) => s.peers(key, 'out', src, peers.ips, numBoxes));
        if (named.length) for (const q of peers.pods) toPod(q);
      } else if (peer.kind === 'ipBlock') {
        const spans = this.spansOf(peer);
        const key = this.id(`out|${src}|${spans.key}|${numBoxes.key}`);
        ops.push((s) => s.block(key, 'out', src, spans, numBoxes));
        // a named port in an ipBlock means the pods inside it that declare the name
        if (named.length) for (const q of this.known) toPod(q, spans);
      }
    }
  }

  /** The pods a peer selects: once per selection, however many policies name it. */
  private podsOf(policy: NetworkPolicy, peer: Extract<Peer, { kind: 'pods' }>): PeerPods {
    let key = this.peerKeys.get(peer);
    if (key === undefined) {
      key = `${peer.namespaceSelector ? JSON.stringify(peer.namespaceSelector) : `=${policy.namespace}`}|${JSON.stringify(peer.podSelector ?? null)}`;
      this.peerKeys.set(peer, key);
    }
    const hit = this.peerCache.get(key);
    if (hit) return hit;
    const nsSel = peer.namespaceSelector;
    const labelsOf = (ns: string) => this.nsLabels.get(ns) ?? { [METADATA_NAME_LABEL]: ns };
    const nsOk = new Set(nsSel ? this.namespaceNames.filter((ns) => matches(nsSel, labelsOf(ns))) : [policy.namespace]);
    const pods = this.known.filter((k) => nsOk.has(k.pod.namespace) && (!peer.podSelector || matches(peer.podSelector, k.pod.labels)));
    const out = { key: `p${this.peerCache.size}`, pods, ips: pods.flatMap((k) => k.ips) };
    this.peerCache.set(key, out);
    return out;
  }

  private spansOf(peer: Extract<Peer, { kind: 'ipBlock' }>): Spans {
    let spans = this.spansCache.get(peer);
    if (!spans) this.spansCache.set(peer, (spans = Object.assign(cidrMinus(peer.cidr, peer.except), { key: `s${this.spansCache.size}` })));
    return spans;
  }

  /** The protocol x port boxes of `ports` as received by `on` (named ports resolved there); undefined ports: everything. */
  private portBoxes(ports: readonly PolicyPort[] | undefined, on: Pod | undefined): Boxes {
    if (!ports) return EVERYTHING;
    const numeric = !ports.some((p) => typeof p.port === 'string');
    const hit = numeric ? this.numericBoxes.get(ports) : undefined;
    if (hit) return hit;
    const out: PortBox[] = [];
    for (const p of ports) {
      const proto: Interval = [PROTO_NUMBER[p.protocol], PROTO_NUMBER[p.protocol]];
      if (p.port === undefined) out.push([proto, ALL_PORTS]);
      else if (typeof p.port === 'number') out.push([proto, [p.port, p.endPort ?? p.port]]);
      else if (on) for (const n of namedPort(on, p.port, p.protocol)) out.push([proto, [n, n]]);
    }
    const text = out.map((x) => `${x[0][0]}-${x[0][1]}:${x[1][0]}-${x[1][1]}`).join(',');
    let id = this.boxIds.get(text);
    if (id === undefined) this.boxIds.set(text, (id = `b${this.boxIds.size}`));
    const boxes = Object.assign(out, { key: id });
    if (numeric) this.numericBoxes.set(ports, boxes);
    return boxes;
  }

  /** A rule's ports split into named and numeric ones, once per rule. */
  private split(rule: PolicyRule) {
    let v = this.splits.get(rule);
    if (!v) this.splits.set(rule, (v = { named: (rule.ports ?? []).filter((p) => typeof p.port === 'string'), numeric: rule.ports?.filter((p) => typeof p.port !== 'string') }));
    return v;
  }
}
