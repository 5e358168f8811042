/**
 * Forwarding database entries of bridge ports and VXLAN devices, through `bridge -json` and
 * `bridge -batch`, and a view of the VXLAN devices' own entries kept current by the kernel's
 * reports.
 *
 * Why the view: every programming pass of an overlay compares the entries it wants with those
 * the kernel holds, and reading them cost a `bridge` process per device and pass. While a mesh
 * forms, passes follow each other (one per peer that appears), and in a 32-host sandbox these
 * reads were half the processes a router started. `bridge monitor fdb` (src/sys/monitor.ts)
 * already reports every change to these devices' entries, so once a device has been read with
 * the monitor running, the reports keep the copy current and later reads cost nothing. Until
 * the monitor runs, after it stops or restarts, and after a batch that failed, a device is read
 * afresh.
 */
import { EntryNotFoundError, ExistsError, LinkNotFoundError } from '../common/errors';
import { run, type RunOptions } from './exec';
import { MONITOR_ENDED, MONITOR_STARTED, type KernelChange } from './monitor';

/** One entry of `bridge -json fdb show`. */
export interface FdbEntry {
  mac: string;
  /** Remote address of a VXLAN entry. */
  dst?: string;
  flags?: string[];
  /** The bridge, for entries the bridge itself holds (learnt or static). */
  master?: string;
  state?: string;
}

/** A device's own entries with a remote (`self`, `dst`), from `bridge monitor fdb` and batch lines. */
const LINE_RE = /^(Deleted )?([0-9a-f]{2}(?::[0-9a-f]{2}){5}) dev (\S+) dst (\S+)(.*)$/;
/** Batch lines that change a device's own entry with a remote. */
const BATCH_RE = /^fdb (append|add|replace|del) ([0-9a-f]{2}(?::[0-9a-f]{2}){5}) dev (\S+) dst (\S+)(.*)$/;

const keyOf = (mac: string, dst: string) => `${mac} ${dst}`;

/** The view described in the file comment; `fdbView` is the router's (its own namespace). */
export class FdbView {
  /** Devices whose entries are known, by device: entries by mac and remote. */
  private readonly known = new Map<string, Map<string, FdbEntry>>();
  private devices = new Set<string>();
  /** Counts the monitor's (re)starts and stops: a read that spans one is not kept. */
  private generation = 0;
  private live = false;
  private liveSince = 0;

  /**
   * @param settleMs a read begun sooner than this after the monitor started is not kept: the
   * monitor may not have subscribed yet, and a change between the read and its subscription
   * would never be reported
   */
  constructor(
    private readonly settleMs = 1000,
    /** Reads a device's entries from the kernel (a fake in unit tests). */
    private readonly read: (dev: string) => Promise<FdbEntry[]> = (dev) => readFdb(dev),
  ) {}

  /** The devices the monitor reports on (KernelWatchOptions.fdbDevices). */
  watch(devices: readonly string[]): void {
    this.devices = new Set(devices);
  }

  /** A report of the kernel watch; only the `bridge` monitor's matter. */
  feed(c: KernelChange): void {
    if (c.source !== 'bridge') return;
    if (c.line === MONITOR_STARTED || c.line === MONITOR_ENDED) {
      this.live = c.line === MONITOR_STARTED;
      this.liveSince = Date.now();
      this.generation++;
      this.known.clear();
      return;
    }
    const m = LINE_RE.exec(c.line.trim());
    if (m) this.change(m[3]!, m[2]!, m[4]!, !m[1], m[5]!);
  }

  /** `dev`'s own entries with a remote (`dst`), as `bridge -json fdb show dev` lists them. */
  async entries(dev: string): Promise<FdbEntry[]> {
    const have = this.known.get(dev);
    if (have) return [...have.values()];
    const gen = this.generation;
    const keep = this.live && Date.now() - this.liveSince >= this.settleMs && this.devices.has(dev);
    const all = await this.read(dev);
    if (keep && gen === this.generation) {
      // reports that arrived during the read are in it already, or land on the copy next
      this.known.set(dev, new Map(all.map((e) => [keyOf(e.mac, e.dst!), e])));
    }
    return all;
  }

  /** `bridge -batch` lines that all succeeded: their changes, before the kernel reports them. */
  wrote(lines: readonly string[]): void {
    for (const l of lines) {
      const m = BATCH_RE.exec(l.trim());
      if (m) this.change(m[3]!, m[2]!, m[4]!, m[1] !== 'del', m[5]!);
    }
  }

  /** A batch on `devs` failed part-way: what it changed is unknown, so they are read again. */
  forget(devs: Iterable<string>): void {
    for (const d of devs) this.known.delete(d);
  }

  private change(dev: string, mac: string, dst: string, present: boolean, rest: string): void {
    const have = this.known.get(dev);
    if (!have) return;
    if (!present) {
      have.delete(keyOf(mac, dst));
      return;
    }
    const state = /\bpermanent\b/.test(rest) ? 'permanent' : /\bstatic\b/.test(rest) ? 'static' : '';
    have.set(keyOf(mac, dst), { mac, dst, flags: ['self'], state });
  }
}

/** The router's view of its own namespace's VXLAN entries (fed by its kernel watch). */
export const fdbView = new FdbView();

/** The devices a batch's lines name. */
function devicesOf(lines: readonly string[]): Set<string> {
  return new Set(lines.map((l) => /\bdev (\S+)/.exec(l)?.[1]).filter((d): d is string => d !== undefined));
}

/** `dev`'s own entries with a remote, read from the kernel. */
async function readFdb(dev: string, opts: RunOptions = {}): Promise<FdbEntry[]> {
  const { stdout } = await run('bridge', ['-json', 'fdb', 'show', 'dev', dev], opts);
  return stdout.trim() ? (JSON.parse(stdout) as FdbEntry[]).filter((e) => e.dst !== undefined && (e.flags ?? []).includes('self')) : [];
}

/** `dev`'s own entries with a remote (`dst`); in this namespace through `fdbView`. */
export function fdbEntries(dev: string, opts: RunOptions = {}): Promise<FdbEntry[]> {
  return opts.netns ? readFdb(dev, opts) : fdbView.entries(dev);
}

/** Runs `bridge -batch -` with one command per line (e.g. `fdb append ...`). */
export async function fdbBatch(lines: readonly string[], opts: RunOptions = {}): Promise<void> {
  if (!lines.length) return;
  try {
    await run('bridge', ['-batch', '-'], { ...opts, input: lines.join('\n') + '\n' });
  } catch (e) {
    if (!opts.netns) fdbView.forget(devicesOf(lines));
    throw e;
  }
  if (!opts.netns) fdbView.wrote(lines);
}

/**
 * Applies `lines` with `batch` as one batch; when it stops at a line whose wish already holds
 * (an entry to delete is gone, as learnt ones age out; one to add is there), the lines are
 * applied one by one, those ignored. Any other failure is thrown.
 */
export async function fdbSettle(lines: readonly string[], batch: (lines: readonly string[]) => Promise<void> = fdbBatch): Promise<void> {
  const holds = (x: unknown, line?: string) =>
    x instanceof EntryNotFoundError || x instanceof LinkNotFoundError || (x instanceof ExistsError && (line === undefined || !/^fdb del /.test(line)));
  try {
    await batch(lines);
  } catch (e) {
    if (!holds(e)) throw e;
    for (const l of lines) await batch([l]).catch((err) => (holds(err, l) ? undefined : Promise.reject(err)));
  }
}
