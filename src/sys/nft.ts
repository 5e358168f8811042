/**
 * nftables through the `nft` command: a script applied as one transaction (`nft -f -`: every
 * command in it commits together or none does), and listings as JSON (`nft -j`).
 *
 * The policy engine is the only user; it keeps its whole state in one table of its own and
 * never touches anything else in the ruleset.
 */
import { run, type RunOptions } from './exec';
import { EntryNotFoundError, LinkNotFoundError } from '../common/errors';

/** One object of `nft -j` output: `{ set: {...} }`, `{ counter: {...} }`, `{ rule: {...} }`, ... */
export type NftJsonObject = Record<string, Record<string, unknown>>;

/** An element of a set as `nft -j` prints it: a value, or `{ elem: { val, timeout, expires } }`. */
export type NftJsonElement = unknown;

/** A set as `nft -j list set` prints it (the fields weft reads). */
export interface NftJsonSet {
  name: string;
  table: string;
  family: string;
  type: string | string[];
  flags?: string[];
  elem?: NftJsonElement[];
}

export class Nft {
  constructor(private readonly opts: RunOptions = {}) {}

  /** Applies `script` as one transaction. Large element lists may take a while: 60 s deadline. */
  async apply(script: string): Promise<void> {
    await run('nft', ['-f', '-'], { ...this.opts, input: script, timeoutMs: this.opts.timeoutMs ?? 60_000 });
  }

  /** `nft -j ARGS`, parsed: the objects of its `nftables` array, without the metainfo entry. */
  async json(args: readonly string[]): Promise<NftJsonObject[]> {
    const { stdout } = await run('nft', ['-j', ...args], this.opts);
    if (!stdout.trim()) return [];
    const parsed = JSON.parse(stdout) as { nftables?: NftJsonObject[] };
    return (parsed.nftables ?? []).filter((o) => !('metainfo' in o));
  }

  /** The named set, or undefined when it (or its table) does not exist. */
  async listSet(family: string, table: string, set: string): Promise<NftJsonSet | undefined> {
    try {
      const objs = await this.json(['list', 'set', family, table, set]);
      return objs.find((o) => o.set)?.set as NftJsonSet | undefined;
    } catch (e) {
      if (isNftMissing(e)) return undefined;
      throw e;
    }
  }

  /** Whether the table exists. */
  async hasTable(family: string, table: string): Promise<boolean> {
    // `list tables` reads no set elements; listing the table itself would read them all
    return (await this.json(['list', 'tables', family])).some((o) => o.table?.name === table);
  }

  /** Deletes the table; absent is success. */
  async deleteTable(family: string, table: string): Promise<void> {
    try {
      await run('nft', ['delete', 'table', family, table], this.opts);
    } catch (e) {
      if (!isNftMissing(e)) throw e;
    }
  }

  /** `nft --version`, e.g. "nftables v1.0.6 (Lester Gooch #5)"; throws a SysError when nft is missing. */
  async version(): Promise<string> {
    const { stdout } = await run('nft', ['--version'], { ...this.opts, timeoutMs: 5000 });
    return stdout.trim();
  }
}

/** True when nft said the table, chain, set or counter does not exist. */
export function isNftMissing(e: unknown): boolean {
  return e instanceof EntryNotFoundError || e instanceof LinkNotFoundError;
}
