/**
 * The policy part of the router: keeps the kernel's policy table equal to what the cluster's
 * NetworkPolicies say for this host's pods.
 *
 * Why it is this way: `update` takes the whole wanted state (level-triggered, like the rest of
 * weft), so a lost or repeated event heals on the next call. Updates arriving close together
 * are coalesced (debounced, with a ceiling on the delay) and applied as one transaction: the
 * first after start replaces the table's rules and elements whole, later ones change only the
 * elements that differ. Starting touches nothing: the rules a previous run left stay in force
 * until the first update replaces them, so a restart never opens or closes anything. Stopping
 * leaves the rules in place too; `remove` takes them away.
 */
import { performance } from 'node:perf_hooks';
import type { Startable } from '../common/lifecycle';
import { Timers } from '../common/lifecycle';
import type { Logger } from '../common/log';
import type { Nft } from '../sys/nft';
import { BlockedLog, type BlockedConnection } from './blocked';
import { Compiler, type PolicyPlan, type PolicySummary, type SelectedPod } from './compile';
import type { PolicyInput } from './model';
import { CHAINS, DROP_COUNT_SETS, FAMILY, RULE_COUNT, SET_NAMES, STATIC_SETS, TABLE, renderDiff, renderFull, renderRemove, type Elements } from './ruleset';
import { isoTime } from '../common/time';

/** What the engine uses from the rest of the router. */
export interface PolicyEngineComponents {
  log: Logger;
  /** nft in the host's network namespace. */
  nft: Nft;
  /** Called with the seconds from an `update` to the moment the kernel enforces it. */
  enforced?: (seconds: number) => void;
}

export interface PolicyEngineInit {
  /** Quiet time before applying (default 50 ms); updates within it are applied together. */
  debounceMs?: number;
  /** Longest an update waits while more keep coming (default 500 ms). */
  maxDelayMs?: number;
  /** How often the table's chains and sets are checked, and put back when missing (default 10 s). */
  verifyMs?: number;
  /** How often blocked connections are collected and logged (default 2 s; 0: never). */
  blockedPollMs?: number;
  /** Blocked connections logged one by one per collection; more are summed up (default 10). */
  blockedBurst?: number;
}

/** For `weft status policy`. */
export interface PolicyStatus {
  /** The nftables table, e.g. "bridge weft_policy". */
  table: string;
  /** The table was there when the engine started (a previous run's rules were kept in force). */
  keptFromBefore: boolean;
  /** At least one update is enforced since the start. */
  applied: boolean;
  lastApply?: {
    at: string;
    /** Seconds from the oldest update it covers to enforcement. */
    seconds: number;
    /** 'full': rules and every element written; 'diff': only changed elements; 'none': nothing changed. */
    kind: 'full' | 'diff' | 'none';
    /** Elements added plus removed (full: all written). */
    changes: number;
    /** Of `seconds`: compiling, and nft committing. */
    compileSeconds: number;
    writeSeconds: number;
  };
  /** The last failure to apply, until an apply succeeds. */
  lastError?: string;
  policies: PolicySummary[];
  /** Local pods some policy selects. */
  pods: SelectedPod[];
  rules: number;
  /** Elements per set. */
  sets: Record<string, number>;
  /** Packets dropped so far (the counters live in the kernel, across restarts of the router). */
  drops: { ingress: number; egress: number };
  warnings: string[];
  blocked: BlockedConnection[];
}

interface Waiter {
  resolve(): void;
  reject(e: Error): void;
}

/** Every this many verify rounds, the rules are counted too (on a big table that costs seconds of nft). */
const DEEP_EVERY = 30;
const sum = (r: Record<string, number>) => Object.values(r).reduce((a, b) => a + b, 0);

export class PolicyEngine implements Startable {
  private readonly timers = new Timers();
  private readonly compiler = new Compiler();
  private readonly blockedLog: BlockedLog;
  private readonly init: Required<PolicyEngineInit>;
  private pending?: { input: PolicyInput; since: number; waiters: Waiter[] };
  private flushTimer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private retryMs = 0;
  private plan?: PolicyPlan;
  private lastInput?: PolicyInput;
  /** What the kernel holds, as far as this process wrote it; undefined: unknown (write it whole). */
  private applied?: Elements;
  private lastApply?: PolicyStatus['lastApply'];
  private lastError?: string;
  private keptFromBefore = false;
  private verifyRound = 0;
  private started = false;

  constructor(
    private readonly c: PolicyEngineComponents,
    init: PolicyEngineInit = {},
  ) {
    this.init = { debounceMs: 50, maxDelayMs: 500, verifyMs: 10_000, blockedPollMs: 2000, blockedBurst: 10, ...init };
    this.blockedLog = new BlockedLog(c.nft, c.log, this.init.blockedBurst);
  }

  async start(): Promise<void> {
    await this.c.nft.version(); // nft missing: say so now, not at the first update
    this.keptFromBefore = await this.c.nft.hasTable(FAMILY, TABLE);
    if (this.keptFromBefore) this.c.log.info({ table: `${FAMILY} ${TABLE}` }, 'policy table from a previous run kept in force until the first update');
    this.started = true;
    this.timers.every(this.init.verifyMs, () => void this.verify());
    if (this.init.blockedPollMs > 0) {
      this.timers.every(this.init.blockedPollMs, () => {
        this.blockedLog.poll(this.plan?.names ?? new Map()).catch((e: Error) => this.c.log.debug({ err: e.message }, 'listing blocked connections failed'));
      });
    }
  }

  async stop(): Promise<void> {
    this.started = false;
    this.timers.clear();
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    await this.running;
    const left = this.pending;
    this.pending = undefined;
    for (const w of left?.waiters ?? []) w.reject(new Error('policy engine stopped before the update was applied'));
  }

  /**
   * Makes the kernel enforce `input` (the whole wanted state). Resolves once it does, or once a
   * later update that supersedes it does; rejects when that apply fails (the engine keeps
   * retrying the latest state with back-off).
   */
  update(input: PolicyInput): Promise<void> {
    return new Promise((resolve, reject) => {
      const now = performance.now();
      this.pending = { input, since: this.pending?.since ?? now, waiters: [...(this.pending?.waiters ?? []), { resolve, reject }] };
      this.retryMs = 0;
      this.schedule(this.init.debounceMs);
    });
  }

  private schedule(delayMs: number): void {
    if (!this.pending || this.running) return; // the running apply schedules again when done
    if (this.flushTimer) clearTimeout(this.flushTimer);
    const ceiling = this.pending.since + this.init.maxDelayMs - performance.now();
    // not unref'd: a caller awaiting update() must not see the process exit under it
    this.flushTimer = setTimeout(() => void this.flush(), Math.max(0, Math.min(delayMs, ceiling)));
  }

  private async flush(): Promise<void> {
    this.flushTimer = undefined;
    const job = this.pending;
    if (!job || this.running) return;
    this.pending = undefined;
    let done!: () => void;
    this.running = new Promise((r) => (done = r));
    try {
      const t0 = performance.now();
      const plan = this.compiler.compile(job.input);
      const t1 = performance.now();
      const { kind, changes } = await this.write(plan.elements);
      const t2 = performance.now();
      this.plan = plan;
      this.lastInput = job.input;
      const seconds = (performance.now() - job.since) / 1000;
      this.lastApply = { at: isoTime(), seconds, kind, changes, compileSeconds: (t1 - t0) / 1000, writeSeconds: (t2 - t1) / 1000 };
      this.lastError = undefined;
      this.retryMs = 0;
      this.c.enforced?.(seconds);
      this.c.log.debug({ kind, changes, seconds, pods: plan.pods.length, policies: plan.policies.length }, 'network policies enforced');
      for (const w of plan.warnings) this.c.log.debug({}, w);
      for (const w of job.waiters) w.resolve();
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      this.lastError = err.message;
      this.retryMs = Math.min(30_000, Math.max(1000, this.retryMs * 2));
      this.c.log.error({ err: err.message, retryInMs: this.retryMs }, 'applying network policies failed');
      for (const w of job.waiters) w.reject(err);
      // retry the latest wanted state, unless a newer one is already waiting
      if (!this.pending && this.started) this.pending = { input: job.input, since: job.since, waiters: [] };
    } finally {
      this.running = undefined;
      done();
      if (this.pending && this.started) this.schedule(this.retryMs || this.init.debounceMs);
    }
  }

  /** Writes `next`: only the differences when the kernel's state is known, else everything. */
  private async write(next: Elements): Promise<{ kind: 'full' | 'diff' | 'none'; changes: number }> {
    const full = () => Object.values(next).reduce((n, e) => n + e.length, 0);
    if (this.applied) {
      const { script, changes } = renderDiff(this.applied, next);
      if (!script) return { kind: 'none', changes: 0 };
      try {
        await this.c.nft.apply(script);
        this.applied = next;
        return { kind: 'diff', changes };
      } catch (e) {
        this.c.log.warn({ err: (e as Error).message }, 'incremental policy update refused; writing the table whole');
        this.applied = undefined;
      }
    }
    try {
      await this.c.nft.apply(renderFull(next));
    } catch (e) {
      // a table of another layout (an older weft): replace it, in the same transaction
      this.c.log.warn({ err: (e as Error).message }, 'policy table could not be updated in place; replacing it');
      await this.c.nft.apply(renderRemove() + renderFull(next));
    }
    this.applied = next;
    return { kind: 'full', changes: full() };
  }

  /**
   * Checks that the table still has every chain with its rules and every set; when not (someone
   * flushed or deleted them), writes the last state again, whole. Returns what is wrong, or
   * undefined. Before the first update there is nothing of this run's to check.
   */
  async verify(): Promise<string | undefined> {
    if (!this.lastInput) return undefined;
    let problem: string | undefined;
    try {
      // chains and sets are cheap to list; rules are not (nft 1.0.6 reads every set element to
      // list them), so those are counted only every DEEP_EVERY rounds, or always on a small table
      const chains = new Set((await this.c.nft.json(['-t', 'list', 'chains', FAMILY])).filter((o) => o.chain?.table === TABLE).map((o) => String(o.chain!.name)));
      const sets = new Set((await this.c.nft.json(['-t', 'list', 'sets', 'table', FAMILY, TABLE]).catch(() => [])).map((o) => String(o.set?.name)));
      const missingChain = Object.keys(CHAINS).find((c) => !chains.has(c));
      const missingSet = SET_NAMES.find((s) => !sets.has(s));
      if (missingChain) problem = `chain ${missingChain} is missing`;
      else if (missingSet) problem = `set ${missingSet} is missing`;
      else if (this.verifyRound++ % DEEP_EVERY === 0 || this.elementCount() < 2000) {
        const rules = new Map<string, number>();
        for (const o of await this.c.nft.json(['-t', 'list', 'table', FAMILY, TABLE])) if (o.rule) rules.set(String(o.rule.chain), (rules.get(String(o.rule.chain)) ?? 0) + 1);
        const bad = Object.entries(CHAINS).find(([name, r]) => rules.get(name) !== r.length);
        if (bad) problem = `chain ${bad[0]} has ${rules.get(bad[0]) ?? 0} rules, not ${bad[1].length}`;
      }
    } catch (e) {
      problem = (e as Error).message;
    }
    if (problem && this.started && !this.pending && !this.running) {
      this.c.log.warn({ problem }, 'policy table damaged; writing it again');
      this.applied = undefined;
      this.pending = { input: this.lastInput, since: performance.now(), waiters: [] };
      this.schedule(0);
    }
    return problem;
  }

  private elementCount(): number {
    return this.plan ? Object.values(this.plan.elements).reduce((n, e) => n + e.length, 0) : 0;
  }

  /** Packets dropped per direction, from the kernel's counters (0 when the table is absent). */
  async drops(): Promise<{ ingress: number; egress: number }> {
    const [ingress, egress] = await Promise.all([this.dropsBy('ingress'), this.dropsBy('egress')]);
    return { ingress: sum(ingress), egress: sum(egress) };
  }

  /** Packets dropped in one direction, per protocol ('tcp', 'udp', 'sctp', 'icmp', or a number). */
  async dropsBy(direction: 'ingress' | 'egress'): Promise<Record<string, number>> {
    const set = await this.c.nft.listSet(FAMILY, TABLE, DROP_COUNT_SETS[direction]);
    const out: Record<string, number> = {};
    for (const e of set?.elem ?? []) {
      const el = (e as { elem?: { val?: unknown; counter?: { packets?: number } } }).elem;
      if (el?.val !== undefined) out[String(el.val)] = (out[String(el.val)] ?? 0) + Number(el.counter?.packets ?? 0);
    }
    return out;
  }

  async status(): Promise<PolicyStatus> {
    const p = this.plan;
    return {
      table: `${FAMILY} ${TABLE}`,
      keptFromBefore: this.keptFromBefore,
      applied: !!this.lastApply,
      lastApply: this.lastApply,
      lastError: this.lastError,
      policies: p?.policies ?? [],
      pods: p?.pods ?? [],
      rules: RULE_COUNT,
      sets: Object.fromEntries(Object.keys(STATIC_SETS).map((s) => [s, p?.elements[s as keyof Elements].length ?? 0])),
      drops: await this.drops().catch(() => ({ ingress: 0, egress: 0 })),
      warnings: p?.warnings ?? [],
      blocked: this.blockedLog.recent(),
    };
  }

  /** The last failure to apply, until an apply succeeds (cheap: no nft call). */
  get failing(): string | undefined {
    return this.lastError;
  }

  /** Collects blocked connections now (the timer does it every `blockedPollMs`); returns those not seen before. */
  pollBlocked(): Promise<BlockedConnection[]> {
    return this.blockedLog.poll(this.plan?.names ?? new Map());
  }

  /** Removes weft's policy table: every pod is open again. For uninstalling, not for restarts. */
  async remove(): Promise<void> {
    await this.running;
    await this.c.nft.apply(renderRemove());
    this.applied = undefined;
  }
}
