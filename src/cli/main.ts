/** weft: the router and the operator's CLI, one executable. */
import { RouterClient } from '../common/client';
import { WeftError } from '../common/errors';
import { DEFAULT_SOCKET } from '../common/netconf';
import type { CliIo } from '../common/command';
import { OPS } from './ops';
import { installCni } from './install-cni';
import { ROUTER_HELP, routerOptions, runRouter } from './router-cmd';

import { VERSION } from '../router/router';

const HELP = `Usage: weft [--socket PATH] COMMAND [ARGS]

Commands:
  router            run the router (see weft router --help)
  status [PART]     router and IPAM status; PART: peers, connections, ipam, targets, policy
  ps                attachments on this host: container, MAC, addresses
  report            the complete state as JSON
  connect ADDR...   connect to peers          forget ADDR...   stop connecting to them
  rmpeer PEER       take over the space of a peer gone for good
  expose [CIDR]     give this host an address on the pod network
  hide [CIDR]       take exposed addresses away
  install-cni       install the plugin and a conflist for container runtimes
  kube-check        what the Kubernetes mode sees: Nodes, their mesh addresses, the peer record
  sandbox           hosts, routers and pods in namespaces on this machine (weft sandbox --help)
  version           print the version

Global options:
  --socket PATH     the router's API socket (default ${DEFAULT_SOCKET})

Examples:
  weft router --peers 10.0.0.2
  weft status
  weft --socket /tmp/w1/weft.sock ps
`;

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
      case 'kube-apiserver': {
        // a test API server for the sandbox (hidden: not for production); loaded on demand
        const { runKubeApiServer } = await import(/* webpackMode: "eager" */ '../kube/apiserver/cli');
        return await runKubeApiServer(rest, io);
      }
      case 'kube-check': {
        // loaded on demand: it brings the Kubernetes client, which no other command needs
        const { runKubeCheck } = await import(/* webpackMode: "eager" */ '../kube/check');
        return await runKubeCheck(rest, io);
      }
      case 'install-cni':
        return await installCni(rest, io);
      case 'probe-agent': {
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        const { runProbeAgent } = require('./probe-agent') as typeof import('./probe-agent');
        return await runProbeAgent(rest, io);
      }
      case 'sandbox': {
        // loaded on demand: it brings execa, which no other command needs at start-up
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        const { runSandbox } = require('./sandbox-cmd') as typeof import('./sandbox-cmd');
        return await runSandbox(rest, io);
      }
      default: {
        const op = OPS[cmd];
        if (op) return await op.run(rest, client, io);
        io.err(`weft: unknown command "${cmd}"\n\n${HELP}`);
        return 2;
      }
    }
  } catch (e) {
    io.err(`weft ${cmd ?? ''}: ${e instanceof WeftError || e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}
