/** weft: the router and the operator's CLI, one executable. */
import { RouterClient } from '../common/client';
import { WeftError } from '../common/errors';
import { DEFAULT_SOCKET } from '../common/netconf';
import type { Report } from '../router/report';
import { parse } from './args';
import { ROUTER_HELP, routerOptions, runRouter } from './router-cmd';

import { VERSION } from '../router/router';

const HELP = `Usage: weft [--socket PATH] COMMAND [ARGS]

Commands:
  router            run the router (see weft router --help)
  status            router and IPAM status
  ps                attachments on this host: container, MAC, addresses
  report            the complete state as JSON
  version           print the version

Global options:
  --socket PATH     the router's API socket (default ${DEFAULT_SOCKET})

Examples:
  weft router --peers 10.0.0.2
  weft status
  weft --socket /tmp/w1/weft.sock ps
`;

export interface CliIo {
  out(s: string): void;
  err(s: string): void;
}

/** Splits `[--socket PATH] COMMAND ARGS...`. */
function splitGlobal(argv: string[]): { socket: string; cmd?: string; rest: string[] } {
  let socket = process.env.WEFT_SOCKET ?? DEFAULT_SOCKET;
  let i = 0;
  while (i < argv.length && argv[i]!.startsWith('-')) {
    const a = argv[i]!;
    if (a === '--socket') socket = argv[++i] ?? '';
    else if (a.startsWith('--socket=')) socket = a.slice(9);
    else if (a === '-h' || a === '--help') return { socket, cmd: 'help', rest: [] };
    else break;
    i++;
  }
  return { socket, cmd: argv[i], rest: argv.slice(i + 1) };
}

export async function runCli(argv: string[], io: CliIo): Promise<number> {
  const { socket, cmd, rest } = splitGlobal(argv);
  const client = new RouterClient({ socket, timeoutMs: 10_000 });
  try {
    switch (cmd) {
      case undefined:
      case 'help':
        io.out(HELP);
        return cmd ? 0 : 2;
      case 'version':
      case '--version':
        io.out(`weft ${VERSION}\n`);
        return 0;
      case 'router': {
        const opts = routerOptions(rest);
        if (!opts) {
          io.out(ROUTER_HELP);
          return 0;
        }
        return await runRouter(opts);
      }
      case 'status': {
        const { values } = parse(rest, {}, true);
        if (values.help) {
          io.out('Usage: weft status\n\nPrints the router and IPAM status.\n');
          return 0;
        }
        const r = await client.get<Report>('/v1/report');
        io.out(formatStatus(r));
        return 0;
      }
      case 'ps': {
        const r = await client.get<Report>('/v1/report');
        for (const a of r.ipam.attachments) io.out(`${a.containerId} ${a.mac ?? '-'} ${a.address}\n`);
        return 0;
      }
      case 'report': {
        const r = await client.get<Report>('/v1/report');
        io.out(JSON.stringify(r, null, 2) + '\n');
        return 0;
      }
      default:
        io.err(`weft: unknown command "${cmd}"\n\n${HELP}`);
        return 2;
    }
  } catch (e) {
    io.err(`weft ${cmd ?? ''}: ${e instanceof WeftError || e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}

function formatStatus(r: Report): string {
  const row = (k: string, v: string | number) => `${k.padStart(17)}: ${v}\n`;
  return (
    '\n' +
    row('Service', 'router') +
    row('Name', `${r.router.name}(${r.router.nickname})`) +
    row('Bridge', `${r.router.bridge} mtu=${r.router.mtu}`) +
    '\n' +
    row('Service', 'ipam') +
    row('Status', r.ipam.status) +
    row('Range', r.ipam.range) +
    row('DefaultSubnet', r.ipam.defaultSubnet) +
    row('Allocations', r.ipam.attachments.length - r.ipam.gateways) +
    row('Free', r.ipam.free) +
    '\n'
  );
}
