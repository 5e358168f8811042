/**
 * What the benchmark parts share: the row shape of every table, a wait for a quiet machine,
 * and running a command inside a namespace with a deadline. No timing assertions here.
 */
import { sleep } from '../../src/sandbox/pool';
import { spawn } from 'node:child_process';
import { loadavg } from 'node:os';
import { fmt, markdownTable, round } from './stats';

/** One line of a benchmark table: a figure next to its reference, measured in the same run. */
export interface Row {
  measurement: string;
  unit: string;
  /** The figure measured (weft's, or the subject named in `measurement`). */
  weft: number;
  reference: number;
  /** weft / reference. */
  ratio: number;
  /** The exact command line(s) that produced the figures. */
  command: string;
  /** Samples behind each figure. */
  n: { weft: number; reference: number };
}

/** What run.ts hands each benchmark part. */
export interface BenchContext {
  signal: AbortSignal;
  /** Progress lines (stderr). */
  progress: (line: string) => void;
  /** Lines printed under the part's table (conditions, odd observations). */
  notes: string[];
  /** Failed measurements: printed, and the run exits 1 (timings are never judged). */
  failures: string[];
  /** Raw samples and details for bench-results.json. */
  json: Record<string, unknown>;
}

export const loadNow = (): number[] => loadavg().map((x) => round(x, 2) ?? NaN);

/**
 * Waits until the 1-minute load average is below `max` (other work on a small machine moves
 * every figure), checking every 5 s, for at most `waitS` seconds. Says what it saw either way.
 */
export async function waitQuiet(ctx: BenchContext, what: string): Promise<string> {
  const max = Number(process.env.BENCH_MAX_LOAD ?? '1.0');
  const waitS = Number(process.env.BENCH_LOAD_WAIT_S ?? '600');
  const t0 = Date.now();
  let announced = false;
  while (loadavg()[0]! >= max && Date.now() - t0 < waitS * 1000) {
    if (!announced) ctx.progress(`bench: ${what}: waiting for load average < ${max} (now ${loadNow().join(' ')}, up to ${waitS} s)`);
    announced = true;
    await sleep(5000, ctx.signal);
  }
  const waited = Math.round((Date.now() - t0) / 1000);
  const l = loadNow();
  const quiet = l[0]! < max;
  return `load average at the start of ${what}: ${l.join(' ')}${waited ? ` (after waiting ${waited} s${quiet ? '' : `, still not below ${max}`})` : ''}`;
}


export interface Captured {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** Runs `cmd args` inside /var/run/netns/`netns` (through nsenter), killed after `timeoutMs`. */
export function runInNetns(netns: string, cmd: string, args: string[], timeoutMs: number): Promise<Captured> {
  return new Promise((resolve) => {
    const child = spawn('nsenter', [`--net=/var/run/netns/${netns}`, '--', cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const t = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => err.push(Buffer.from(String(e))));
    child.on('close', (code, signal) => {
      clearTimeout(t);
      resolve({ code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), timedOut });
    });
  });
}

/** The command line as a reader would type it. */
export const shown = (netns: string, cmd: string, args: string[]) => `ip netns exec ${netns} ${[cmd, ...args].join(' ')}`;

export function row(measurement: string, unit: string, weft: number[], ref: number[], stat: (xs: number[]) => number, command: string): Row {
  const w = stat(weft);
  const r = stat(ref);
  return { measurement, unit, weft: w, reference: r, ratio: Number.isFinite(w) && Number.isFinite(r) && r !== 0 ? w / r : NaN, command, n: { weft: weft.length, reference: ref.length } };
}

/** A part's rows as a Markdown table (columns as run.ts prints them, with the value column named). */
export function rowsTable(rows: Row[], valueHeader: string, referenceHeader: string, digits = 2): string {
  return markdownTable(
    ['measurement', valueHeader, referenceHeader, 'ratio', 'command'],
    rows.map((r) => [
      r.measurement + (r.n.weft !== r.n.reference ? ` [n=${r.n.weft}/${r.n.reference}]` : ''),
      fmt(r.weft, r.unit === 'bytes' || r.unit === 'pairs' ? 0 : digits),
      fmt(r.reference, r.unit === 'bytes' || r.unit === 'pairs' ? 0 : digits),
      fmt(r.ratio, 2),
      `\`${r.command}\``,
    ]),
  );
}

export const jsonRows = (rows: Row[]) => rows.map((r) => ({ ...r, weft: round(r.weft), reference: round(r.reference), ratio: round(r.ratio) }));
