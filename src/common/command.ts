/**
 * What every weft subcommand shares, wherever it lives (cli/, and the Kubernetes commands in
 * kube/): where it writes, and argument parsing (node:util parseArgs, with errors that name the flag).
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError } from './errors';

/** Where a CLI command writes: its output, and its diagnostics. Commands take it instead of touching process streams, so tests read what they print. */
export interface CliIo {
  out(s: string): void;
  err(s: string): void;
}

export type Options = NonNullable<ParseArgsConfig['options']>;

export interface Parsed {
  values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  positionals: string[];
}

export function parse(argv: string[], options: Options, positionals = true): Parsed {
  try {
    return parseArgs({ args: argv, options: { help: { type: 'boolean', short: 'h' }, ...options }, allowPositionals: positionals, strict: true });
  } catch (e) {
    throw new ConfigError('', (e as Error).message);
  }
}

export function intFlag(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new ConfigError(`--${name}`, `"${v}" is not a whole number`);
  return Number(v);
}
