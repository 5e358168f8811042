/**
 * weft-net: the CNI plugin's entry. Reads CNI_* and the config on stdin, runs one verb, and
 * prints the result or a CNI error on stdout. Logs never go to stdout.
 */
import { createLogger, type Logger } from '../common/log';
import { parseNetConf, type NetConf } from '../common/netconf';
import { DecodeError } from '../common/errors';
import { parseCommand, parseEnv, type Verb } from './env';
import { toCniError } from './errors';
import { convertResult, PLUGIN_VERSION, requireVersion, SUPPORTED_VERSIONS } from './version';
import type { Ctx } from './attachment';
import { add } from './add';
import { del } from './del';
import { check } from './check';
import { gc } from './gc';
import { status } from './status';
import { Trace } from './trace';

export interface Io {
  env: NodeJS.ProcessEnv;
  readStdin(): string;
  stdout(s: string): void;
  stderr(s: string): void;
}

const MIN_VERSION: Partial<Record<Verb, string>> = { CHECK: '0.4.0', GC: '1.1.0', STATUS: '1.1.0' };

/** Runs one CNI invocation; returns the process exit code. */
export async function runPlugin(io: Io): Promise<number> {
  let verb: Verb | undefined;
  let conf: NetConf | undefined;
  let log: Logger | undefined;
  const trace = new Trace(io.env);
  trace.mark('main');
  try {
    verb = parseCommand(io.env);
    if (verb === undefined) {
      io.stderr(`weft-net: CNI plugin of weft, CNI protocol versions supported: ${SUPPORTED_VERSIONS.join(', ')}\n`);
      return 0;
    }
    if (verb === 'VERSION') {
      io.stdout(JSON.stringify({ cniVersion: PLUGIN_VERSION, supportedVersions: SUPPORTED_VERSIONS }) + '\n');
      const t = trace.line(verb);
      if (t) io.stderr(t);
      return 0;
    }
    const env = parseEnv(verb, io.env);
    let stdin: string;
    try {
      stdin = io.readStdin();
    } catch (e) {
      throw new DecodeError(`cannot read the config from stdin: ${(e as Error).message}`);
    }
    conf = parseNetConf(stdin);
    requireVersion(conf.cniVersion, verb, MIN_VERSION[verb]);
    log = createLogger({ name: 'weft-net', level: conf.logLevel ?? 'warn', file: conf.logFile }).child({
      verb,
      network: conf.name,
      ...(env.containerId ? { containerId: env.containerId } : {}),
    });
    trace.mark('parsed');
    const ctx: Ctx = { env, conf, log, trace };
    switch (verb) {
      case 'ADD':
        io.stdout(JSON.stringify(convertResult(await add(ctx), conf.cniVersion)) + '\n');
        break;
      case 'DEL':
        await del(ctx);
        break;
      case 'CHECK':
        await check(ctx);
        break;
      case 'GC':
        await gc(ctx);
        break;
      case 'STATUS':
        await status(ctx);
        break;
    }
    log.flush();
    const t = trace.line(verb);
    if (t) io.stderr(t);
    return 0;
  } catch (e) {
    const out = toCniError(e, verb, conf?.cniVersion ?? PLUGIN_VERSION);
    log?.error({ code: out.code, err: out.msg }, `${verb ?? 'CNI'} failed`);
    log?.flush();
    io.stdout(JSON.stringify(out) + '\n');
    const t = trace.line(verb);
    if (t) io.stderr(t);
    return 1;
  }
}
