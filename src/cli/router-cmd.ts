/** `weft router`: runs the router in the foreground until SIGTERM or SIGINT. */
import { ConfigError } from '../common/errors';
import { isLevel } from '../common/log';
import { zodToConfigError } from '../common/netconf';
import { Router } from '../router/router';
import { ROUTER_DEFAULTS, routerOptionsSchema, type RouterOptions } from '../router/options';
import { intFlag, parse } from './args';

export const ROUTER_HELP = `Usage: weft router [PEER...] [options]

Runs the router of this host: IPAM for the pods, the bridge, forwarding and masquerade rules,
and the API on a unix socket for the weft-net plugin and the weft CLI.

Options:
  --peers a,b               peers to connect to (same as PEER arguments)
  --name MAC                peer name (default: chosen once, kept in the state dir)
  --nickname NAME           nickname shown in status (default: host name)
  --state-dir DIR           persistent state (default ${ROUTER_DEFAULTS.stateDir})
  --socket PATH             API socket, mode 0600 (default ${ROUTER_DEFAULTS.socket})
  --ipalloc-range CIDR      pod address range (default ${ROUTER_DEFAULTS.ipallocRange})
  --ipalloc-default-subnet CIDR  default subnet inside the range (default: the range)
  --ipalloc-init MODE       consensus=N | seed=A,B | observer
  --port N                  mesh TCP port (default ${ROUTER_DEFAULTS.port})
  --bridge NAME             bridge for the pods (default ${ROUTER_DEFAULTS.bridge})
  --mtu N                   pod MTU (default: underlay MTU less encapsulation)
  --password-file F         encrypt peer traffic (or env WEFT_PASSWORD)
  --metrics-addr HOST:PORT  metrics and health (default ${ROUTER_DEFAULTS.metricsAddr})
  --advertise-addr IP       address peers reach this host at
  --no-masq                 do not masquerade pod egress
  --log-level LEVEL         trace|debug|info|warn|error (default info)
  --log-file F              log to a file instead of stderr

Examples:
  weft router
  weft router 192.168.1.10 --ipalloc-range 10.32.0.0/12
  weft router --state-dir /tmp/w1 --socket /tmp/w1/weft.sock --bridge weave
`;

export function routerOptions(argv: string[]): RouterOptions | undefined {
  const { values: v, positionals } = parse(argv, {
    peers: { type: 'string' },
    name: { type: 'string' },
    nickname: { type: 'string' },
    'state-dir': { type: 'string' },
    socket: { type: 'string' },
    'ipalloc-range': { type: 'string' },
    'ipalloc-default-subnet': { type: 'string' },
    'ipalloc-init': { type: 'string' },
    port: { type: 'string' },
    bridge: { type: 'string' },
    mtu: { type: 'string' },
    'password-file': { type: 'string' },
    'metrics-addr': { type: 'string' },
    'advertise-addr': { type: 'string' },
    'no-masq': { type: 'boolean' },
    'log-level': { type: 'string' },
    'log-file': { type: 'string' },
  });
  if (v.help) return undefined;
  const s = (k: string) => v[k] as string | undefined;
  const level = s('log-level') ?? ROUTER_DEFAULTS.logLevel;
  if (!isLevel(level)) throw new ConfigError('--log-level', `"${level}" is not one of trace, debug, info, warn, error, fatal, silent`);
  const raw = {
    peers: [...positionals, ...(s('peers')?.split(',').filter(Boolean) ?? [])],
    name: s('name'),
    nickname: s('nickname'),
    stateDir: s('state-dir') ?? ROUTER_DEFAULTS.stateDir,
    socket: s('socket') ?? ROUTER_DEFAULTS.socket,
    ipallocRange: s('ipalloc-range') ?? ROUTER_DEFAULTS.ipallocRange,
    ipallocDefaultSubnet: s('ipalloc-default-subnet'),
    ipallocInit: s('ipalloc-init'),
    port: intFlag('port', s('port')) ?? ROUTER_DEFAULTS.port,
    bridge: s('bridge') ?? ROUTER_DEFAULTS.bridge,
    mtu: intFlag('mtu', s('mtu')),
    passwordFile: s('password-file'),
    metricsAddr: s('metrics-addr') ?? ROUTER_DEFAULTS.metricsAddr,
    advertiseAddr: s('advertise-addr'),
    masquerade: !v['no-masq'],
    logLevel: level,
    logFile: s('log-file'),
  };
  const r = routerOptionsSchema.safeParse(raw);
  if (!r.success) {
    const e = zodToConfigError(r.error);
    const flag = '--' + e.field.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
    throw new ConfigError(flag, e.message.slice(e.field.length + 2));
  }
  return r.data;
}

export async function runRouter(opts: RouterOptions): Promise<number> {
  const router = new Router(opts);
  try {
    await router.start();
  } catch (e) {
    router.log.error({ err: (e as Error).message }, 'router failed to start');
    router.log.flush();
    throw e;
  }
  return new Promise<number>((resolve) => {
    const stop = (sig: string) => {
      router.log.info({ signal: sig }, 'stopping');
      // exit once stopped: a wait still pending (an allocation's deadline) must not hold the process
      void router.stop().then(
        () => {
          resolve(0);
          setImmediate(() => process.exit(0));
        },
        () => process.exit(1),
      );
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}
