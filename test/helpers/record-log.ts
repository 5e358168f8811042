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

export function recordingLogger(): { log: Logger; records: LogRecord[]; find: (msg: string) => LogRecord[] } {
  const records: LogRecord[] = [];
  const make = (bindings: Record<string, unknown>): Logger => {
    const emit = (level: LogRecord['level']) => (fields: Record<string, unknown> | string, msg?: string) => {
      if (typeof fields === 'string') records.push({ level, msg: fields, fields: { ...bindings } });
      else records.push({ level, msg: msg ?? '', fields: { ...bindings, ...fields } });
    };
    return {
      trace: emit('trace'),
      debug: emit('debug'),
      info: emit('info'),
      warn: emit('warn'),
      error: emit('error'),
      child: (b) => make({ ...bindings, ...b }),
      level: 'trace',
      flush: () => undefined,
    };
  };
  return { log: make({}), records, find: (msg) => records.filter((r) => r.msg === msg) };
}
