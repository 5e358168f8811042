/** Forwarding database entries of bridge ports and VXLAN devices, through `bridge -json` and `bridge -batch`. */
import { run, type RunOptions } from './exec';

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

export async function fdbEntries(dev: string, opts: RunOptions = {}): Promise<FdbEntry[]> {
  const { stdout } = await run('bridge', ['-json', 'fdb', 'show', 'dev', dev], opts);
  return stdout.trim() ? (JSON.parse(stdout) as FdbEntry[]) : [];
}

/** Runs `bridge -batch -` with one command per line (e.g. `fdb append ...`). */
export async function fdbBatch(lines: readonly string[], opts: RunOptions = {}): Promise<void> {
  if (lines.length) await run('bridge', ['-batch', '-'], { ...opts, input: lines.join('\n') + '\n' });
}
