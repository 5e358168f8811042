/**
 * `weft probe-agent`: the reachability probes of src/policy/probe.ts as a command, to run inside
 * a pod's network namespace (nsenter). Not for operators; the sandbox and the tests use it.
 *
 *   weft probe-agent serve tcp:80 tcp:81 udp:80 udp:81   echo servers; prints "ready" once listening, runs until killed
 *   weft probe-agent probe [--timeout-ms N] < targets.json   probes a JSON array of {protocol, host, port, timeoutMs?} at once;
 *                                                        prints the results as a JSON array
 */
import { ConfigError } from '../common/errors';
import { parse, intFlag } from './args';
import type { CliIo } from './main';
import { parseServeSpec, probeAll, serve, type ProbeTarget } from '../policy/probe';

export const PROBE_AGENT_HELP = `Usage: weft probe-agent serve SPEC...        (SPEC: tcp:PORT or udp:PORT)
       weft probe-agent probe [--timeout-ms N] < targets.json
`;

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
}

export async function runProbeAgent(argv: string[], io: CliIo): Promise<number> {
  const [mode, ...rest] = argv;
  if (mode === 'serve') {
    const { positionals } = parse(rest, {});
    if (!positionals.length) throw new ConfigError('SPEC', 'give at least one tcp:PORT or udp:PORT');
    const specs = positionals.map((s) => {
      try {
        return parseServeSpec(s);
      } catch (e) {
        throw new ConfigError('SPEC', (e as Error).message);
      }
    });
    const close = await serve(specs);
    io.out('ready\n');
    await new Promise<void>((resolve) => {
      for (const sig of ['SIGTERM', 'SIGINT'] as const) process.once(sig, () => resolve());
    });
    await close();
    return 0;
  }
  if (mode === 'probe') {
    const { values } = parse(rest, { 'timeout-ms': { type: 'string' } }, false);
    const timeoutMs = intFlag('timeout-ms', values['timeout-ms'] as string | undefined) ?? 1000;
    let targets: ProbeTarget[];
    try {
      targets = JSON.parse(await readStdin()) as ProbeTarget[];
      if (!Array.isArray(targets)) throw new Error('not an array');
    } catch (e) {
      throw new ConfigError('stdin', `expected a JSON array of {protocol, host, port}: ${(e as Error).message}`);
    }
    io.out(JSON.stringify(await probeAll(targets, timeoutMs)) + '\n');
    return 0;
  }
  io.out(PROBE_AGENT_HELP);
  return mode === undefined || mode === '--help' || mode === '-h' ? 0 : 2;
}
