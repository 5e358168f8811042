/**
 * `weft probe-agent`: the reachability probes of src/policy/probe.ts as a command, to run inside
 * a pod's network namespace (nsenter). Not for operators; the sandbox and the tests use it.
 *
 *   weft probe-agent serve tcp:80 tcp:81 udp:80 udp:81   echo servers; prints "ready" once listening, runs until killed
 *   weft probe-agent probe [--timeout-ms N] < targets.json   probes a JSON array of {protocol, host, port, timeoutMs?} at once;
 *                                                        prints the results as a JSON array
 *   weft probe-agent agent SPEC...                        serves like `serve`, and probes for every line of stdin
 *                                                        ({"id", "targets": [...]}), answering {"id", "results": [...]}
 *                                                        on stdout: one process per pod for a whole test run
 */
import { createInterface } from 'node:readline';
import { ConfigError } from '../common/errors';
import { parse, intFlag, type CliIo } from '../common/command';
import { parseServeSpec, probeAll, serve, type ProbeTarget } from '../policy/probe';

export const PROBE_AGENT_HELP = `Usage: weft probe-agent serve SPEC...        (SPEC: tcp:PORT or udp:PORT)
       weft probe-agent probe [--timeout-ms N] < targets.json
       weft probe-agent agent SPEC...        (serve, and probe per line of stdin)
`;

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
}

export async function runProbeAgent(argv: string[], io: CliIo): Promise<number> {
  const [mode, ...rest] = argv;
  if (mode === 'serve' || mode === 'agent') {
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
      if (mode === 'agent') {
        const lines = createInterface({ input: process.stdin });
        lines.on('line', (line) => {
          let req: { id?: unknown; targets?: ProbeTarget[] };
          try {
            req = JSON.parse(line) as typeof req;
          } catch {
            io.out(JSON.stringify({ error: `not JSON: ${line.slice(0, 100)}` }) + '\n');
            return;
          }
          void probeAll(req.targets ?? []).then((results) => io.out(JSON.stringify({ id: req.id, results }) + '\n'));
        });
        lines.on('close', () => resolve());
      }
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
