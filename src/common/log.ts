/**
 * Leveled, one-event-per-line JSON logging with pino, to a file or stderr (never stdout: the
 * plugin's stdout belongs to the CNI result).
 *
 * pino is loaded on the first record that passes the level check. Loading it costs ~17 ms of
 * start-up in the single executable, which the plugin pays on every CNI call; at the plugin's
 * default level (`warn`) a successful ADD emits nothing and never loads it.
 */
import type * as PinoNs from 'pino';

export type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
export const LEVELS: readonly Level[] = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];
const VALUE: Record<Level, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity };

type Fields = Record<string, unknown>;

export interface Logger {
  trace(fields: Fields | string, msg?: string): void;
  debug(fields: Fields | string, msg?: string): void;
  info(fields: Fields | string, msg?: string): void;
  warn(fields: Fields | string, msg?: string): void;
  error(fields: Fields | string, msg?: string): void;
  /** A logger whose records carry `bindings` as fields (peer names, container IDs, ...). */
  child(bindings: Fields): Logger;
  readonly level: Level;
  /** Writes out anything buffered; call before a deliberate exit. */
  flush(): void;
}

export interface LogOptions {
  level?: Level;
  /** Append to this file instead of stderr. */
  file?: string;
  name: string;
}

export function isLevel(s: string): s is Level {
  return (LEVELS as readonly string[]).includes(s);
}

export function createLogger(opts: LogOptions): Logger {
  const level = opts.level ?? 'info';
  let root: PinoNs.Logger | undefined;
  const getRoot = (): PinoNs.Logger => {
    if (!root) {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const pino = require('pino') as typeof PinoNs.default;
      const dest = opts.file
        ? pino.destination({ dest: opts.file, sync: true, mkdir: true, append: true })
        : pino.destination({ fd: 2, sync: true });
      root = pino({ name: opts.name, level, base: { pid: process.pid } }, dest);
    }
    return root;
  };
  const make = (bindings: Fields | undefined): Logger => {
    let inst: PinoNs.Logger | undefined;
    const get = () => (inst ??= bindings ? getRoot().child(bindings) : getRoot());
    const emit = (lv: Exclude<Level, 'silent'>) => (fields: Fields | string, msg?: string) => {
      if (VALUE[lv] < VALUE[level]) return;
      if (typeof fields === 'string') get()[lv](fields);
      else get()[lv](fields, msg);
    };
    return {
      level,
      trace: emit('trace'),
      debug: emit('debug'),
      info: emit('info'),
      warn: emit('warn'),
      error: emit('error'),
      child: (b) => make({ ...bindings, ...b }),
      flush: () => root?.flush(),
    };
  };
  return make(undefined);
}
