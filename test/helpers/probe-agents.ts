/**
 * Servers and probers inside pod namespaces, for the policy tests and benches: one `weft
 * probe-agent agent` per namespace (serves TCP/UDP ports there and probes from there on
 * request, one process for a whole run) and, for SCTP, `sctp-probe.py` (this kernel has no
 * SCTP sockets: it speaks the first packets over raw sockets). `destroy()` kills them all.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { Netns, ROOT, WEFT } from './netns';
import type { MatrixSpec, MatrixTarget } from '../../src/policy/matrix-run';

export const SCTP_PROBE = join(ROOT, 'test/helpers/sctp-probe.py');

export type ProbeResult = { connected: boolean; error?: string };

export class ProbeAgents {
  private readonly servers: ChildProcess[] = [];
  private readonly agents = new Map<string, Agent>();

  /** Starts servers in `ns` for every spec; resolves when all listen. */
  async serve(ns: Netns, specs: readonly MatrixSpec[]): Promise<void> {
    const tcpUdp = specs.filter((s) => s.protocol !== 'sctp').map((s) => `${s.protocol}:${s.port}`);
    const sctp = specs.filter((s) => s.protocol === 'sctp').map((s) => String(s.port));
    const starts: Promise<void>[] = [];
    if (tcpUdp.length) {
      if (this.agents.has(ns.path)) throw new Error(`${ns.name} has its agent already`);
      const agent = new Agent(ns, tcpUdp);
      this.agents.set(ns.path, agent);
      this.servers.push(agent.child);
      starts.push(agent.ready);
    }
    if (sctp.length) starts.push(this.startServer(ns, ['python3', SCTP_PROBE, 'serve', ...sctp]));
    await Promise.all(starts);
  }

  private startServer(ns: Netns, argv: string[]): Promise<void> {
    const child = spawn('nsenter', [`--net=${ns.path}`, '--', ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.servers.push(child);
    return new Promise((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`${argv.join(' ')} in ${ns.name}: not ready within 30 s: ${out}`)), 30_000);
      child.stdout!.on('data', (d) => {
        out += d;
        if (out.includes('ready')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.stderr!.on('data', (d) => (out += d));
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`${argv.join(' ')} in ${ns.name} exited ${code}: ${out}`));
      });
    });
  }

  /**
   * Probes from `ns`, results in the order of `targets`. A refused TCP connection is a broken
   * set-up (nothing listens there), not a policy: it throws.
   */
  async probe(ns: Netns, targets: readonly MatrixTarget[]): Promise<ProbeResult[]> {
    const tcpUdp = targets.map((t, i) => ({ t, i })).filter((x) => x.t.protocol !== 'sctp');
    const sctp = targets.map((t, i) => ({ t, i })).filter((x) => x.t.protocol === 'sctp');
    const results: ProbeResult[] = new Array(targets.length);
    const runs: Promise<void>[] = [];
    if (tcpUdp.length) {
      const agent = this.agents.get(ns.path);
      const asked = tcpUdp.map((x) => x.t);
      runs.push(
        (agent ? agent.probe(asked) : runJson(ns, [WEFT, 'probe-agent', 'probe'], asked)).then((r: ProbeResult[]) => {
          r.forEach((x, k) => (results[tcpUdp[k]!.i] = x));
          const refused = r.find((x) => x.error === 'refused');
          if (refused) throw new Error(`probe from ${ns.name}: ${JSON.stringify(refused)}: nothing listens there (test set-up)`);
        }),
      );
    }
    if (sctp.length) {
      runs.push(runJson(ns, ['python3', SCTP_PROBE, 'probe'], sctp.map((x) => x.t)).then((r: ProbeResult[]) => r.forEach((x, k) => (results[sctp[k]!.i] = x))));
    }
    await Promise.all(runs);
    return results;
  }

  destroy(): void {
    for (const s of this.servers) if (s.exitCode === null && s.signalCode === null) s.kill('SIGKILL');
    this.servers.length = 0;
    this.agents.clear();
  }
}

/** `weft probe-agent agent` in a namespace: serves there, and probes from there on request. */
class Agent {
  readonly child: ChildProcess;
  readonly ready: Promise<void>;
  private seq = 0;
  private readonly waiting = new Map<number, (r: any[]) => void>();

  constructor(
    readonly ns: Netns,
    specs: string[],
  ) {
    this.child = spawn('nsenter', [`--net=${ns.path}`, '--', WEFT, 'probe-agent', 'agent', ...specs], { stdio: ['pipe', 'pipe', 'pipe'] });
    let log = '';
    this.child.stderr!.on('data', (d) => (log += d));
    this.ready = new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`probe agent in ${ns.name}: not ready within 30 s: ${log}`)), 30_000);
      createInterface({ input: this.child.stdout! }).on('line', (line) => {
        if (line === 'ready') {
          clearTimeout(timer);
          return resolve();
        }
        const m = JSON.parse(line) as { id: number; results: any[] };
        this.waiting.get(m.id)?.(m.results);
        this.waiting.delete(m.id);
      });
      this.child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`probe agent in ${ns.name} exited ${code}: ${log}`));
        for (const w of this.waiting.values()) w([]);
      });
    });
    this.ready.catch(() => undefined);
  }

  probe(targets: unknown[]): Promise<any[]> {
    const id = ++this.seq;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`probe agent in ${this.ns.name}: no answer within 30 s`)), 30_000);
      this.waiting.set(id, (r) => {
        clearTimeout(timer);
        if (r.length !== targets.length) reject(new Error(`probe agent in ${this.ns.name} ended`));
        else resolve(r);
      });
      this.child.stdin!.write(JSON.stringify({ id, targets }) + '\n');
    });
  }
}

/** Runs a command in `ns` with `input` as JSON on stdin and parses its stdout as JSON. */
function runJson(ns: Netns, argv: string[], input: unknown, timeoutMs = 30_000): Promise<any> {
  return new Promise((resolve, reject) => {
    const child = spawn('nsenter', [`--net=${ns.path}`, '--', ...argv], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`${argv.join(' ')} in ${ns.name}: exit ${code}: ${err || out}`));
      try {
        resolve(JSON.parse(out));
      } catch {
        reject(new Error(`${argv.join(' ')} in ${ns.name}: not JSON: ${out} ${err}`));
      }
    });
    child.stdin.end(JSON.stringify(input));
  });
}
