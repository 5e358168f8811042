/**
 * Reachability matrices in the layout of the upstream NetworkPolicy e2e tests: every pod to
 * every pod, one matrix per protocol and port. A `Truth` is either what a case expects (built
 * with the helpers below, starting from "everything connects") or what the probes saw; `compare`
 * lists where they differ and `formatTruth` prints a matrix, marking those cells.
 *
 * Cells: `.` connected, `X` blocked; in a comparison a wrong cell shows what was observed
 * followed by `!`.
 */

/** Pods are named "namespace/name". */
export type PodKey = string;

export interface Mismatch {
  from: PodKey;
  to: PodKey;
  expected: boolean;
  observed: boolean;
}

export class Truth {
  private readonly cells = new Map<string, boolean>();

  constructor(
    readonly pods: readonly PodKey[],
    initial = true,
  ) {
    for (const f of pods) for (const t of pods) this.cells.set(`${f}>${t}`, initial);
  }

  get(from: PodKey, to: PodKey): boolean {
    const v = this.cells.get(`${from}>${to}`);
    if (v === undefined) throw new Error(`no cell ${from} -> ${to} in this matrix`);
    return v;
  }

  set(from: PodKey, to: PodKey, v: boolean): this {
    this.get(from, to);
    this.cells.set(`${from}>${to}`, v);
    return this;
  }

  /** Sets every cell where `pred` holds. */
  where(pred: (from: PodKey, to: PodKey) => boolean, v: boolean): this {
    for (const f of this.pods) for (const t of this.pods) if (pred(f, t)) this.cells.set(`${f}>${t}`, v);
    return this;
  }

  /** Every pod to `to` (or to each pod `to` accepts). */
  ingress(to: PodKey | ((p: PodKey) => boolean), v: boolean): this {
    const m = typeof to === 'string' ? (p: PodKey) => p === to : to;
    return this.where((_, t) => m(t), v);
  }

  /** `from` (or each pod `from` accepts) to every pod. */
  egress(from: PodKey | ((p: PodKey) => boolean), v: boolean): this {
    const m = typeof from === 'string' ? (p: PodKey) => p === from : from;
    return this.where((f) => m(f), v);
  }

  /** A pod always reaches itself (policies cannot block it): sets the diagonal. */
  loopback(): this {
    for (const p of this.pods) this.cells.set(`${p}>${p}`, true);
    return this;
  }

  count(v: boolean): number {
    return [...this.cells.values()].filter((x) => x === v).length;
  }
}

/** Cells where `observed` differs from `expected` (same pods, any order). */
export function compare(expected: Truth, observed: Truth): Mismatch[] {
  const out: Mismatch[] = [];
  for (const from of expected.pods)
    for (const to of expected.pods) {
      const e = expected.get(from, to);
      const o = observed.get(from, to);
      if (e !== o) out.push({ from, to, expected: e, observed: o });
    }
  return out;
}

/** The matrix as text: rows are sources, columns destinations. With `expected`, wrong cells end in `!`. */
export function formatTruth(t: Truth, title = '', expected?: Truth): string {
  const w = Math.max(4, ...t.pods.map((p) => p.length)) + 1;
  const first = Math.max(w, title.length + 2);
  const lines = [(title || '-').padEnd(first) + t.pods.map((p) => p.padEnd(w)).join('')];
  for (const f of t.pods) {
    const cells = t.pods.map((to) => {
      const v = t.get(f, to);
      return ((v ? '.' : 'X') + (expected && expected.get(f, to) !== v ? '!' : '')).padEnd(w);
    });
    lines.push(f.padEnd(first) + cells.join(''));
  }
  return lines.map((l) => l.trimEnd()).join('\n') + '\n';
}
