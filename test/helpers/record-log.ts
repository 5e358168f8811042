/**
 * A Logger that keeps its records in memory, for tests of what an operator is told (which
 * event, at which level, with which fields). Children share the parent's record list.
 */
import type { Level, Logger } from '../../src/common/log';

export interface LogRecord {
  level: Exclude<Level, 'silent'>;
  msg: string;
  fields: Record<string, unknown>;
}

/** A Logger that keeps its records, for assertions on what the engine logged. */
export function memoryLogger(lines: { level: Level; fields: Record<string, unknown>; msg: string }[] = []): Logger & { lines: typeof lines } {
  const make = (bindings: Record<string, unknown>): Logger & { lines: typeof lines } => {
    const emit = (level: Level) => (fields: Record<string, unknown> | string, msg?: string) => {
      if (typeof fields === 'string') lines.push({ level, fields: bindings, msg: fields });
      else lines.push({ level, fields: { ...bindings, ...fields }, msg: msg ?? '' });
    };
    return {
      level: 'trace',
      trace: emit('trace'),
      debug: emit('debug'),
      info: emit('info'),
      warn: emit('warn'),
      error: emit('error'),
      child: (b) => make({ ...bindings, ...b }),
      flush: () => undefined,
      lines,
    };
  };
  return make({});
}

/** `memoryLogger` with a lookup by message. */
export function recordingLogger(): { log: Logger; records: LogRecord[]; find: (msg: string) => LogRecord[] } {
  const log = memoryLogger();
  const records = log.lines as LogRecord[];
  return { log, records, find: (msg) => records.filter((r) => r.msg === msg) };
}
