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
import { lastOf, parseCidr } from '../common/ip';
import { disjointCover, mergeIntervals, type Interval } from './intervals';
import type { PolicyInput } from './model';
import { SET_NAMES, type Elements, type SetName } from './ruleset';
import { EVERYTHING, ip, num, pkText, Sink, type PolicySummary, type SelectedPod } from './sink';
import { World, worldKey } from './world';
import { byText } from '../common/order';

export type { PolicySummary, SelectedPod } from './sink';
export { namedPort } from './world';

export interface PolicyPlan {
  /** Element strings per static set, in the order made (deterministic for a given input). */
  elements: Elements;
  pods: SelectedPod[];
  policies: PolicySummary[];
  /** Named ports a selected local pod does not declare, and the like; at most 50. */
  warnings: string[];
  /** Every known pod address -> "namespace/name" (for the blocked-connection log). */
  names: Map<string, string>;
}

const iv = ([lo, hi]: Interval, fmt: (n: number) => string | number = (n) => n) => (lo === hi ? `${fmt(lo)}` : `${fmt(lo)}-${fmt(hi)}`);

/**
 * Compiles input after input, remembering what each policy means while the pods, namespaces
 * and local pods stay the same (see world.ts): the engine keeps one.
 */
export class Compiler {
  private world?: World;
  private key?: string;

  compile(input: PolicyInput): PolicyPlan {
    const key = worldKey(input);
    if (!this.world || key !== this.key) {
      this.world = new World(input);
      this.key = key;
    }
    const world = this.world;
    const s = new Sink();
    for (const policy of input.policies) for (const op of world.ops(policy)) op(s);
    return finish(s, input, world);
  }
}

/** One compilation, nothing remembered. */
export function compile(input: PolicyInput): PolicyPlan {
  return new Compiler().compile(input);
}

function finish(s: Sink, input: PolicyInput, world: World): PolicyPlan {
  // isolation: a pod allowed everything in a direction is not isolated in it
  const iso = { in: new Set<number>(), out: new Set<number>() };
  for (const [a, sp] of s.selected) {
    if (sp.ingress.length && !s.allowAll.in.has(a)) iso.in.add(a);
    if (sp.egress.length && !s.allowAll.out.has(a)) iso.out.add(a);
  }
  for (const dir of ['in', 'out'] as const) {
    for (const a of iso[dir]) {
      s.add(dir === 'in' ? 'ingress_isolated' : 'egress_isolated', ip(a));
      s.peers(world.id(`${dir}|${a}|self`), dir, a, [a], EVERYTHING); // a pod always reaches itself
    }
  }
  for (const a of new Set([...iso.in, ...iso.out])) s.add('isolated', ip(a));
  for (const a of input.nodeAddresses) if (num(a) !== undefined) s.add('node_addrs', a);
  const exempt = mergeIntervals((input.exempt ?? []).map((c) => parseCidr(c)).filter((c) => c !== undefined).map((c) => [c.base, lastOf(c)] as const));
  for (const span of exempt) s.add('exempt', iv(span, ip));

  // flatten, leaving out pods that turned out not isolated in that direction (each nested
  // entry is unique already: plain arrays, no set of strings needed)
  const flat = Object.fromEntries(SET_NAMES.map((n) => [n, [...s.hash[n]]])) as Record<SetName, string[]>;
  for (const dir of ['in', 'out'] as const) {
    const keep = iso[dir];
    for (const [key, boxes] of s.ranges[dir]) {
      if (!keep.has(key)) continue;
      for (const [addrs, protos, ports] of disjointCover(boxes)) flat[`${dir}_range`].push(`${ip(key)} . ${iv(addrs!, ip)} . ${iv(protos!)} . ${iv(ports!)}`);
    }
    const at = (i: number) => ip(s.addrs[i]!);
    const any = flat[`${dir}_pod_any`];
    const port = flat[`${dir}_pod_port`];
    const anyPort = flat[`${dir}_any_port`];
    for (const [local, peers] of s.podAny[dir]) if (keep.has(s.addrs[local]!)) for (const peer of peers) any.push(`${at(local)} . ${at(peer)}`);
    for (const [local, peers] of s.podPort[dir]) {
      if (!keep.has(s.addrs[local]!)) continue;
      const l = at(local);
      for (const [peer, ports] of peers) {
        const lp = `${l} . ${at(peer)} . `;
        for (const k of ports) port.push(lp + pkText(k));
      }
    }
    for (const [local, ports] of s.anyPort[dir]) if (keep.has(s.addrs[local]!)) for (const k of ports) anyPort.push(`${at(local)} . ${pkText(k)}`);
  }
  return {
    elements: flat as unknown as Elements,
    pods: [...s.selected.values()].sort((x, y) => byText(x.namespace + x.name, y.namespace + y.name)),
    policies: s.policies,
    warnings: s.warningList(),
    names: world.names,
  };
}
