/**
 * iptables chains of weft's own, installed idempotently on either backend.
 *
 * The backend is the one the host already uses: whichever of iptables-legacy and iptables-nft
 * holds more rules (the same heuristic as Kubernetes' iptables-wrapper), nft on a tie.
 * `WEFT_IPTABLES=legacy|nft` overrides. Rules are loaded with `iptables-restore --noflush`,
 * which replaces the content of weft's chains atomically and leaves every other chain alone;
 * the jumps from the built-in chains are added only when missing.
 */
import { run, type RunOptions } from './exec';
import { dropShared, RULES, shared } from './shared-reads';

export type Backend = 'legacy' | 'nft';

/** A chain of weft's own and the built-in chain that jumps to it. */
export interface ChainSpec {
  table: 'filter' | 'nat';
  chain: string;
  from: string;
  rules: string[];
}

async function ruleCount(backend: Backend, opts: RunOptions): Promise<number> {
  try {
    const { stdout } = await run(`iptables-${backend}-save`, [], opts);
    return stdout.split('\n').filter((l) => l.startsWith('-A ')).length;
  } catch {
    return -1;
  }
}

export async function detectBackend(opts: RunOptions = {}): Promise<Backend> {
  const forced = process.env.WEFT_IPTABLES;
  if (forced === 'legacy' || forced === 'nft') return forced;
  const [legacy, nft] = await Promise.all([ruleCount('legacy', opts), ruleCount('nft', opts)]);
  if (nft < 0 && legacy >= 0) return 'legacy';
  return legacy > nft ? 'legacy' : 'nft';
}

type ByChain = Map<string, string[]>;

/** `iptables-save` output as each table's rules by chain (`-A CHAIN ...` lines). */
function parseSave(stdout: string): Map<string, ByChain> {
  const tables = new Map<string, ByChain>();
  let cur: ByChain | undefined;
  for (const l of stdout.split('\n')) {
    if (l.startsWith('*')) tables.set(l.slice(1).trim(), (cur = new Map()));
    const m = /^-A (\S+) /.exec(l);
    if (!m || !cur) continue;
    const list = cur.get(m[1]!);
    if (list) list.push(l);
    else cur.set(m[1]!, [l]);
  }
  return tables;
}

export class Iptables {
  constructor(
    readonly backend: Backend,
    private readonly opts: RunOptions = {},
  ) {}

  private bin(suffix = ''): string {
    return `iptables-${this.backend}${suffix}`;
  }

  /** Replaces the content of each chain with its rules, creating chains and jumps as needed. */
  async apply(specs: readonly ChainSpec[]): Promise<void> {
    const tables = new Map<string, ChainSpec[]>();
    for (const s of specs) tables.set(s.table, [...(tables.get(s.table) ?? []), s]);
    const lines: string[] = [];
    for (const [table, chains] of tables) {
      lines.push(`*${table}`);
      for (const c of chains) lines.push(`:${c.chain} - [0:0]`);
      for (const c of chains) for (const r of c.rules) lines.push(`-A ${c.chain} ${r}`);
      lines.push('COMMIT');
    }
    await run(this.bin('-restore'), ['-w', '5', '--noflush'], { ...this.opts, input: lines.join('\n') + '\n' });
    this.dropShared();
    const missing = new Set(await this.missingJumps(specs));
    for (const c of specs) {
      if (!missing.has(`${c.table}/${c.chain}`)) continue;
      await run(this.bin(), ['-w', '5', '-t', c.table, '-I', c.from, '1', '-j', c.chain], this.opts);
      this.dropShared();
    }
  }

  /** Key of this backend's rules in a pass's shared reads (shared-reads.ts). */
  private get sharedKey(): string {
    return `${RULES}${this.opts.netns ?? ''}:${this.backend}`;
  }

  /** After a write: what the pass read before it is stale. */
  private dropShared(): void {
    dropShared(this.sharedKey);
  }

  /**
   * The chains whose jump from their built-in chain (`-A FROM -j CHAIN`, as `apply` inserts it)
   * is missing: one `iptables-save` per table, not a process per chain (this runs on every
   * repair pass).
   */
  async missingJumps(specs: readonly ChainSpec[]): Promise<string[]> {
    const saved = new Map<string, Map<string, string[]>>();
    const out: string[] = [];
    for (const c of specs) {
      let t = saved.get(c.table);
      if (!t) saved.set(c.table, (t = await this.rulesByChain(c.table)));
      if (!(t.get(c.from) ?? []).includes(`-A ${c.from} -j ${c.chain}`)) out.push(`${c.table}/${c.chain}`);
    }
    return out;
  }

  /** The rules of one chain as `iptables-save` prints them (`-A CHAIN ...`), empty when it does not exist. */
  async rules(table: ChainSpec['table'], chain: string): Promise<string[]> {
    return (await this.rulesByChain(table)).get(chain) ?? [];
  }

  /**
   * Every chain's rules in `table`, as `rules` gives them, from one `iptables-save` (within a
   * pass's shared reads, one of every table, shared: shared-reads.ts). The lists are the
   * caller's to read, not to change.
   */
  async rulesByChain(table: ChainSpec['table']): Promise<ByChain> {
    const all = shared(this.sharedKey, async () => parseSave((await run(this.bin('-save'), [], this.opts)).stdout));
    if (all) return (await all).get(table) ?? new Map();
    return parseSave((await run(this.bin('-save'), ['-t', table], this.opts)).stdout).get(table) ?? new Map();
  }

  /** Removes chains and their jumps; absent ones are skipped. */
  async remove(specs: readonly ChainSpec[]): Promise<void> {
    for (const c of specs) {
      for (;;) {
        try {
          await run(this.bin(), ['-w', '5', '-t', c.table, '-D', c.from, '-j', c.chain], this.opts);
        } catch {
          break;
        }
      }
      for (const op of ['-F', '-X']) await run(this.bin(), ['-w', '5', '-t', c.table, op, c.chain], this.opts).catch(() => undefined);
    }
    this.dropShared();
  }
}
