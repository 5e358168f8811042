/**
 * Where the compiler puts what policies allow, before it becomes element strings: per direction
 * and local pod, nested maps of small integers (local -> peer -> protocol*65536+port). Many
 * policies allow the same pairs; integers dedupe them far cheaper than element strings would,
 * and strings are made once, at the end, for what is left.
 */
import { formatIPv4, parseIPv4 } from '../common/ip';
import type { Box, Interval } from './intervals';
import { SET_NAMES, type SetName } from './ruleset';

export const ALL_IPS: Interval = [0, 0xffffffff];
export const ALL_PROTOS: Interval = [0, 255];
export const ALL_PORTS: Interval = [0, 65535];
const MAX_WARNINGS = 50;

/** Ports of a rule, resolved for one receiving pod: protocol range x port range. */
export type PortBox = readonly [Interval, Interval];
/** A rule's port boxes with a key that identifies them (within one World). */
export type Boxes = PortBox[] & { key: string };
/** An ipBlock's addresses, `except` cut out, with a key (within one World). */
export type Spans = Interval[] & { key: string };

export const EVERYTHING: Boxes = Object.assign([[ALL_PROTOS, ALL_PORTS] as PortBox], { key: 'all' });
export const isAll = (pb: PortBox) => pb[0][0] === 0 && pb[0][1] === 255 && pb[1][0] === 0 && pb[1][1] === 65535;
export const isPoint = (pb: PortBox) => pb[0][0] === pb[0][1] && pb[1][0] === pb[1][1];
const pk = (pb: PortBox) => pb[0][0] * 65536 + pb[1][0];
export const pkText = (k: number) => `${Math.floor(k / 65536)} . ${k % 65536}`;

/** Formatting addresses is a large part of the work on big clusters: once per address. */
const ipText = new Map<number, string>();
export function ip(n: number): string {
  let s = ipText.get(n);
  if (s === undefined) {
    if (ipText.size > 1_000_000) ipText.clear();
    ipText.set(n, (s = formatIPv4(n)));
  }
  return s;
}

/** Dotted quads (the model validated them); anything else goes through the full parser. */
export function num(s: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return parseIPv4(s);
  const [a, b, c, d] = [Number(m[1]), Number(m[2]), Number(m[3]), Number(m[4])];
  return a > 255 || b > 255 || c > 255 || d > 255 ? undefined : ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
}

export function inner<K, V>(m: Map<K, V>, k: K, make: () => V): V {
  let v = m.get(k);
  if (v === undefined) m.set(k, (v = make()));
  return v;
}

export type Dir = 'in' | 'out';

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

export class Sink {
  readonly hash = Object.fromEntries(SET_NAMES.map((n) => [n, new Set<string>()])) as Record<SetName, Set<string>>;
  /** Interval boxes per local pod, covered disjointly at the end. */
  readonly ranges = { in: new Map<number, Box[]>(), out: new Map<number, Box[]>() };
  /** Local pods some rule allows everything, per direction (they are not isolated in it). */
  readonly allowAll = { in: new Set<number>(), out: new Set<number>() };
  readonly podAny = { in: new Map<number, Set<number>>(), out: new Map<number, Set<number>>() };
  readonly podPort = { in: new Map<number, Map<number, Set<number>>>(), out: new Map<number, Map<number, Set<number>>>() };
  readonly anyPort = { in: new Map<number, Set<number>>(), out: new Map<number, Set<number>>() };
  readonly selected = new Map<number, SelectedPod>();
  readonly policies: PolicySummary[] = [];
  private readonly warnings: string[] = [];
  private dropped = 0;
  /** Addresses as small integers (V8 hashes those fastest), and back. */
  private readonly index = new Map<number, number>();
  readonly addrs: number[] = [];
  /** (direction, local pod, peers, ports) already added, by their World-wide id: policies often repeat them. */
  private readonly done = new Set<number>();

  ix(addr: number): number {
    let i = this.index.get(addr);
    if (i === undefined) this.index.set(addr, (i = this.addrs.push(addr) - 1));
    return i;
  }

  add(set: SetName, key: string): void {
    this.hash[set].add(key);
  }

  range(dir: Dir, local: number, box: Box): void {
    inner(this.ranges[dir], local, () => [] as Box[]).push(box);
  }

  warn(s: string): void {
    if (this.warnings.length < MAX_WARNINGS) this.warnings.push(s);
    else this.dropped++;
  }

  warningList(): string[] {
    return this.dropped ? [...this.warnings, `(${this.dropped} more)`] : this.warnings;
  }

  select(local: number, namespace: string, name: string, policy: string, ingress: boolean, egress: boolean): void {
    const sp = inner(this.selected, local, () => ({ namespace, name, ip: ip(local), ingress: [] as string[], egress: [] as string[] }));
    if (ingress) sp.ingress.push(policy);
    if (egress) sp.egress.push(policy);
  }

  private once(k: number): boolean {
    if (this.done.has(k)) return false;
    this.done.add(k);
    return true;
  }

  /**
   * Peer pods' addresses with the ports `boxes` allow, for one local pod. `key` is a number
   * standing for (direction, local pod, peers, ports): the same one again adds nothing.
   */
  peers(key: number, dir: Dir, local: number, ips: readonly number[], boxes: Boxes): void {
    if (!boxes.length || !this.once(key)) return;
    const l = this.ix(local);
    const points: number[] = [];
    for (const pb of boxes) {
      if (isAll(pb)) {
        const set = inner(this.podAny[dir], l, () => new Set<number>());
        for (const a of ips) set.add(this.ix(a));
      } else if (isPoint(pb)) points.push(pk(pb));
      else for (const a of ips) this.range(dir, local, [[a, a], ...pb]);
    }
    if (points.length) {
      const m = inner(this.podPort[dir], l, () => new Map<number, Set<number>>());
      for (const a of ips) {
        const set = inner(m, this.ix(a), () => new Set<number>());
        for (const x of points) set.add(x);
      }
    }
  }

  /** Address spans with ports, for one local pod; `key` as for `peers`. */
  block(key: number, dir: Dir, local: number, spans: Spans, boxes: Boxes): void {
    if (!boxes.length || !this.once(key)) return;
    for (const span of spans) for (const pb of boxes) this.range(dir, local, [span, ...pb]);
  }

  /** Ports from anyone (a rule without peers). */
  anyone(dir: Dir, local: number, boxes: Boxes): void {
    for (const pb of boxes) {
      if (isAll(pb)) this.allowAll[dir].add(local);
      else if (isPoint(pb)) inner(this.anyPort[dir], this.ix(local), () => new Set<number>()).add(pk(pb));
      else this.range(dir, local, [ALL_IPS, ...pb]);
    }
  }
}
