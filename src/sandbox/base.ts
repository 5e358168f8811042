/**
 * The sandbox's record and its routers' APIs: names, the state file, what each router
 * reports, and the waits of `up` (every API answering, the mesh complete). `Sandbox`
 * (sandbox.ts) builds on it.
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { RouterClient } from '../common/client';
import type { Report, Summary } from '../router/report';
import { isAlive, processArgv } from '../sys/process';
import { checkPrefix, sandboxDir } from './options';
import { sleep } from './pool';
import { readState, StateWriter, type HostRecord, type SandboxState } from './state';
import { NETNS_DIR, netnsPath, SandboxError, stripPrefixLen, type MeshWait, type SandboxHost, type SandboxOpenOptions, type SandboxPod } from './types';
import { fmtMs, tail } from './util';

export class SandboxCore {
  readonly prefix: string;
  readonly dir: string;
  protected state: SandboxState | undefined;
  private readonly writer: StateWriter;
  protected readonly log: (line: string) => void;

  constructor(opts: SandboxOpenOptions = {}) {
    this.prefix = checkPrefix(opts.prefix ?? 'wsb');
    this.dir = opts.dir ?? sandboxDir(this.prefix);
    this.writer = new StateWriter(this.dir);
    this.log = opts.log ?? (() => undefined);
  }

  async load(): Promise<SandboxState | undefined> {
    this.state = await readState(this.dir);
    return this.state;
  }

  /** True when a state file was loaded or written. */
  get exists(): boolean {
    return this.state !== undefined;
  }

  get underlayNetns(): string {
    return `${this.prefix}-ul`;
  }

  hostNetns(i: number): string {
    return `${this.prefix}-h${i}`;
  }

  podNetns(host: number, j: number): string {
    return `${this.prefix}-h${host}-p${j}`;
  }

  get hosts(): SandboxHost[] {
    return (this.state?.hosts ?? []).map((h) => ({ ...h, netnsPath: netnsPath(h.netns) }));
  }

  get pods(): SandboxPod[] {
    return (this.state?.pods ?? []).map((p) => ({ ...p, netnsPath: netnsPath(p.name), address: stripPrefixLen(p.cidr) }));
  }

  /** Host by 1-based index. */
  host(i: number): SandboxHost {
    const h = this.hosts.find((x) => x.index === i);
    if (!h) throw new SandboxError(`no host ${i} in the sandbox (hosts: ${this.hosts.map((x) => x.index).join(', ') || 'none'})`);
    return h;
  }

  podsOf(i: number): SandboxPod[] {
    return this.pods.filter((p) => p.host === i);
  }

  protected get st(): SandboxState {
    if (!this.state) throw new SandboxError(`no sandbox with prefix ${this.prefix} (no ${join(this.dir, 'state.json')}); start one with weft sandbox up`);
    return this.state;
  }

  protected save(): Promise<void> {
    return this.writer.write(this.st);
  }

  /** Writes the record after a change made through `record` (the Kubernetes-mode modules). */
  persist(): Promise<void> {
    return this.save();
  }

  /** Forgets the loaded record (after `down`). */
  protected forget(): void {
    this.state = undefined;
  }

  /** The record as loaded or written (undefined before `up` or after `down`). */
  get record(): SandboxState | undefined {
    return this.state;
  }

  /** Progress lines, as the caller asked for them. */
  say(line: string): void {
    this.log(line);
  }

  /** Namespaces whose name carries this sandbox's prefix, whether recorded or not. */
  async namespaces(): Promise<string[]> {
    let names: string[];
    try {
      names = await fs.readdir(NETNS_DIR);
    } catch {
      return [];
    }
    return names.filter((n) => n.startsWith(`${this.prefix}-`)).sort();
  }


  /** True when `pid` is this host's router (guards against a reused pid). */
  isRouter(h: HostRecord, pid: number | undefined = h.pid): boolean {
    if (!pid || !isAlive(pid)) return false;
    const argv = processArgv(pid);
    return !!argv && argv.includes('router') && argv.includes(h.socket);
  }

  protected client(h: HostRecord, timeoutMs = 5000): RouterClient {
    return new RouterClient({ socket: h.socket, timeoutMs });
  }

  /** The router's report (GET /v1/report, what `weft report` prints). */
  report(host: number | HostRecord, timeoutMs = 5000): Promise<Report> {
    const h = typeof host === 'number' ? this.host(host) : host;
    return this.client(h, timeoutMs).get<Report>('/v1/report');
  }

  /** Every router's report, or the error for the ones that do not answer. */
  reports(timeoutMs = 5000): Promise<(Report | Error)[]> {
    return this.fromEach<Report>('/v1/report', timeoutMs);
  }

  /** Every router's summary (GET /v1/summary: peer and connection counts, IPAM status), or the error for the ones that do not answer. */
  summaries(timeoutMs = 5000): Promise<(Summary | Error)[]> {
    return this.fromEach<Summary>('/v1/summary', timeoutMs);
  }

  /** GET `path` of every router, in host order; the error in place of an answer that did not come. */
  private fromEach<T>(path: string, timeoutMs: number): Promise<(T | Error)[]> {
    return Promise.all(this.hosts.map((h) => this.client(h, timeoutMs).get<T>(path).catch((e: Error) => e)));
  }

  /** Waits until each router (or only `only`) answers its API; fails at once when one exits. */
  async waitReady(deadlineMs: number, signal?: AbortSignal, only?: number[]): Promise<void> {
    const deadline = Date.now() + deadlineMs;
    let pending = this.st.hosts.filter((h) => !only || only.includes(h.index));
    const last = new Map<number, string>();
    for (;;) {
      signal?.throwIfAborted();
      for (const h of pending) {
        if (!h.pid || !isAlive(h.pid)) throw new SandboxError(`router of ${h.nickname} (pid ${h.pid ?? '-'}) exited; its log ${h.logFile} ends:\n${await tail(h.logFile, 12)}`);
      }
      const answered = await Promise.all(
        pending.map((h) =>
          this.report(h, 2000).then(
            () => true,
            (e: Error) => (last.set(h.index, e.message), false),
          ),
        ),
      );
      pending = pending.filter((_, k) => !answered[k]);
      if (pending.length === 0) return;
      if (Date.now() >= deadline) {
        const h = pending[0]!;
        throw new SandboxError(
          `router of ${pending.map((x) => x.nickname).join(', ')} did not answer within ${fmtMs(deadlineMs)} (${last.get(h.index)}); the log ${h.logFile} ends:\n${await tail(h.logFile, 12)}`,
        );
      }
      await sleep(100, signal);
    }
  }

  /**
   * Best effort: waits until every router reports all hosts as peers and an established
   * connection to each of the others (N-1 each), up to the deadline, and
   * then reports what it saw. It polls the routers' summaries, not their reports: a report
   * costs a router most of a millisecond at 32 peers, and every router is asked four times a
   * second.
   */
  async waitMesh(deadlineMs: number, signal?: AbortSignal): Promise<MeshWait> {
    const t0 = Date.now();
    const n = this.st.hosts.length;
    for (;;) {
      const rs = await this.summaries(2000);
      const peers = rs.map((r) => (r instanceof Error ? undefined : r.peers));
      const established = rs.map((r) => (r instanceof Error ? undefined : r.established));
      const ms = Date.now() - t0;
      if (peers.every((p, i) => p !== undefined && p >= n && (established[i] ?? 0) >= n - 1)) return { complete: true, peers, established, ms };
      if (ms >= deadlineMs) return { complete: false, peers, established, ms, reason: `not all ${n} peers within ${fmtMs(deadlineMs)}` };
      await sleep(250, signal);
    }
  }
}
