import { createLogger, type Logger } from '../common/log';

/** A logger that writes nothing, for one-shot commands. */
export function quietLogger(): Logger {
  return createLogger({ name: 'weft', level: 'silent' });
}
