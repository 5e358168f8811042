/** `weft sandbox up|down|status`: several hosts, their routers and pods in network namespaces on this machine. */
import { ConfigError } from '../common/errors';
import {
  checkPrefix,
  DEFAULT_DEADLINE_MS,
  DEFAULT_PREFIX,
  describeMesh,
  fmtMs,
  formatDown,
  formatMatrix,
  formatStatus,
  MAX_HOSTS,
  MAX_PODS,
  MIN_UNDERLAY_MTU,
  Sandbox,
  upOptions,
} from '../sandbox';
import { parse, type CliIo } from '../common/command';
import { sandboxAddHost, sandboxApplyOrDelete, sandboxProbe } from './sandbox-kube-cmd';
import { formatKubeStatus, formatProbe, kubeStatus, probeSandbox } from '../sandbox';

export const SANDBOX_HELP = `Usage: weft sandbox up|down|status|add-host|apply|delete|probe [options]

A whole weft network on one machine: N hosts as network namespaces on one underlay bridge
(itself in a namespace), a weft router in each, M pods per host attached by the real weft-net
plugin. Nothing is created in the machine's own namespace. Needs root.

Commands:
  up        build the sandbox, print each router's status and a ping matrix
  down      stop the routers, delete the namespaces and the state
  status    hosts, routers and pods of the running sandbox
  add-host  one more host and its router (in Kubernetes mode a Node, found by the others)
  apply     (--kube) create or replace Namespaces, Pods, NetworkPolicies from a manifest file
  delete    (--kube) delete the objects of a manifest file
  probe     (--kube) the pods' reachability matrix per port and protocol

Run weft sandbox COMMAND --help for the options of each.

Examples:
  weft sandbox up --hosts 3 --pods 2
  weft sandbox status
  weft sandbox down
  weft sandbox up --kube --hosts 3 --manifests examples/policy
  weft sandbox probe
`;

const UP_HELP = `Usage: weft sandbox up [options]

Builds N hosts (namespaces PREFIX-h1..PREFIX-hN at 172.30.0.11.. on an underlay bridge in
namespace PREFIX-ul), starts a weft router in each (host 1 alone, the others joined through
host 1), waits until every router answers and (best effort) the mesh is complete, attaches
M pods per host (namespaces PREFIX-hI-pJ) with weft-net, then prints each router's status and
a ping matrix. A set-up failure removes everything made so far and exits non-zero; failed
pings do not (the matrix shows them).

Options:
  --hosts N             hosts, 1..${MAX_HOSTS} (default 2)
  --pods M              pods per host, 0..${MAX_PODS} (default 2)
  --mtu N               underlay MTU, ${MIN_UNDERLAY_MTU}..65535 (default 1500); pods get it less the encapsulation
  --plugin PATH         the weft-net binary (default: weft-net next to weft)
  --router-args "..."   extra arguments for every weft router, e.g. "--log-level debug"
  --password-file FILE  every router encrypts with the password in FILE (the sleeve carries all
                        pod traffic between hosts, sealed); checked before anything is made
  --trusted-subnets CIDR,...
                        with --password-file: hosts inside skip data-path encryption (kernel VXLAN)
  --prefix NAME         namespace name prefix (default ${DEFAULT_PREFIX}); state in /run/weft-sandbox/NAME
  --wait SECONDS        deadline for the routers to answer and the mesh to form (default ${DEFAULT_DEADLINE_MS / 1000})
  --join seed|chain     hosts join through host 1 (seed, default) or each through the one before (chain)
  --underlay advertise|discover
                        routers are given their address (--advertise-addr, default) or find
                        their underlay themselves (default route, route towards the peers,
                        or the address a peer's connection reached)
  --no-default-route    hosts get no default route (on-premise, air-gapped hosts)
  --no-matrix           skip the ping matrix
  --kube                Kubernetes mode: the test API server (weft kube-apiserver) at 172.30.0.1:6443
                        in the underlay namespace, a Node per host (host1..), routers with
                        --kubeconfig and no --peers; waits for each Node's NetworkUnavailable=False
  --manifests PATH      (with --kube) create the Namespaces, Pods and NetworkPolicies of a file or
                        directory; each Pod becomes a pod serving its ports (--pods defaults to 0);
                        see weft sandbox apply --help

Examples:
  weft sandbox up --hosts 3 --pods 2
  weft sandbox up --hosts 2 --pods 4 --mtu 9000
  weft sandbox up --hosts 3 --join chain --underlay discover --no-default-route
  weft sandbox up --hosts 2 --router-args "--log-level debug --no-masq"
  weft sandbox up --hosts 3 --password-file /etc/weft/password
  weft sandbox up --plugin ./dist/weft-net --prefix demo
  weft sandbox up --kube --hosts 3 --manifests examples/policy
`;

const DOWN_HELP = `Usage: weft sandbox down [--prefix NAME]

Stops the routers (SIGTERM, SIGKILL after 5 s), deletes every namespace whose name starts with
the prefix (also ones a crashed set-up did not record), and removes the state directory.
Running it again is harmless.

Examples:
  weft sandbox down
  weft sandbox down --prefix demo
`;

const STATUS_HELP = `Usage: weft sandbox status [--prefix NAME] [--json]

Shows the hosts with their router (alive or not, peers, established connections, IPAM status)
and the pods with their addresses.

Examples:
  weft sandbox status
  weft sandbox status --json
`;

function needRoot(io: CliIo): boolean {
  if (process.getuid?.() === 0) return true;
  io.err('weft sandbox: needs root (it creates network namespaces)\n');
  return false;
}

export async function runSandbox(argv: string[], io: CliIo): Promise<number> {
  const [sub, ...rest] = argv;
  try {
    switch (sub) {
      case undefined:
      case '-h':
      case '--help':
      case 'help':
        io.out(SANDBOX_HELP);
        return sub ? 0 : 2;
      case 'up':
        return await up(rest, io);
      case 'down':
        return await down(rest, io);
      case 'status':
        return await status(rest, io);
      case 'apply':
      case 'delete':
        return await sandboxApplyOrDelete(sub, rest, io);
      case 'probe':
        return await sandboxProbe(rest, io);
      case 'add-host':
        return await sandboxAddHost(rest, io);
      default:
        io.err(`weft sandbox: unknown command "${sub}"\n\n${SANDBOX_HELP}`);
        return 2;
    }
  } catch (e) {
    if (e instanceof ConfigError) {
      io.err(`weft sandbox ${sub}: ${e.message}\n(see weft sandbox ${sub} --help)\n`);
      return 2;
    }
    throw e;
  }
}

/** `--router-args --x` would read as a missing value: glue the next word on, whatever it starts with. */
function glueRouterArgs(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--router-args' && i + 1 < argv.length) out.push(`--router-args=${argv[++i]}`);
    else out.push(argv[i]!);
  }
  return out;
}

async function up(argv: string[], io: CliIo): Promise<number> {
  const { values: v, positionals } = parse(glueRouterArgs(argv), {
    hosts: { type: 'string' },
    pods: { type: 'string' },
    mtu: { type: 'string' },
    plugin: { type: 'string' },
    'router-args': { type: 'string' },
    prefix: { type: 'string' },
    wait: { type: 'string' },
    join: { type: 'string' },
    'no-matrix': { type: 'boolean' },
    underlay: { type: 'string' },
    'no-default-route': { type: 'boolean' },
    kube: { type: 'boolean' },
    manifests: { type: 'string' },
    'password-file': { type: 'string' },
    'trusted-subnets': { type: 'string' },
  });
  if (v.help) {
    io.out(UP_HELP);
    return 0;
  }
  if (positionals.length) throw new ConfigError('', `unexpected argument "${positionals[0]}"`);
  const s = (k: string) => v[k] as string | undefined;
  const wait = s('wait');
  if (wait !== undefined && !(/^\d+$/.test(wait) && Number(wait) >= 1 && Number(wait) <= 3600)) throw new ConfigError('--wait', `must be 1..3600 seconds, got "${wait}"`);
  const opts = upOptions({
    hosts: s('hosts'),
    pods: s('pods') ?? (s('manifests') !== undefined ? 0 : undefined),
    mtu: s('mtu'),
    plugin: s('plugin'),
    routerArgs: s('router-args'),
    deadlineMs: wait ? Number(wait) * 1000 : undefined,
    matrix: !v['no-matrix'],
    join: s('join'),
    underlay: s('underlay'),
    defaultRoute: !v['no-default-route'],
    kube: !!v.kube,
    manifests: s('manifests'),
    passwordFile: s('password-file'),
    trustedSubnets: s('trusted-subnets'),
  });
  const prefix = checkPrefix(s('prefix') ?? DEFAULT_PREFIX);
  if (!needRoot(io)) return 1;

  const sb = new Sandbox({ prefix, log: (l) => io.out(l + '\n') });
  const ac = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    io.err(`\n${sig}: stopping the set-up\n`);
    ac.abort(new Error(`interrupted by ${sig}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const t0 = Date.now();
  io.out(`weft sandbox up: ${opts.hosts} host${opts.hosts === 1 ? '' : 's'} x ${opts.pods} pod${opts.pods === 1 ? '' : 's'}, prefix ${prefix}, underlay mtu ${opts.mtu}\n`);
  let res;
  try {
    res = await sb.up(opts, ac.signal);
  } catch (e) {
    io.err(`weft sandbox up: ${(e as Error).message}\n`);
    return ac.signal.aborted ? 130 : 1;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  if (!res.mesh.complete && opts.hosts > 1) io.out(`note: mesh ${describeMesh(res.mesh, opts.hosts)}; going on\n`);

  for (const h of res.hosts) {
    io.out(`\n== ${h.nickname} (${h.netns}, ${h.address}, pid ${h.pid}): weft --socket ${h.socket} status\n`);
    try {
      io.out(await sb.weftStatus(h.index));
    } catch (e) {
      io.out(`(no status: ${(e as Error).message})\n`);
    }
  }
  const kube = await kubeStatus(sb.record);
  if (kube) io.out(`\n== Kubernetes mode\n${formatKubeStatus(kube)}`);
  if (opts.matrix && opts.manifests) {
    io.out(`\n== reachability of the Pods (weft sandbox probe)\n`);
    io.out(await probeSandbox(sb).then(formatProbe, (e: Error) => `(no matrix: ${e.message})\n`));
  }
  if (opts.matrix) {
    io.out(`\n== connectivity: ping -c1 -W1 between the pods\n`);
    const m = await sb.pingMatrix();
    io.out(formatMatrix(m, prefix));
  }
  const downCmd = `weft sandbox down${prefix === DEFAULT_PREFIX ? '' : ` --prefix ${prefix}`}`;
  io.out(`\nsandbox ${prefix} up: set-up ${fmtMs(res.ms)}, total ${fmtMs(Date.now() - t0)}; state in ${sb.dir}/state.json; remove it with: ${downCmd}\n`);
  return 0;
}

async function down(argv: string[], io: CliIo): Promise<number> {
  const { values: v, positionals } = parse(argv, { prefix: { type: 'string' } });
  if (v.help) {
    io.out(DOWN_HELP);
    return 0;
  }
  if (positionals.length) throw new ConfigError('', `unexpected argument "${positionals[0]}"`);
  const prefix = checkPrefix((v.prefix as string | undefined) ?? DEFAULT_PREFIX);
  if (!needRoot(io)) return 1;
  const sb = new Sandbox({ prefix, log: (l) => io.err(l + '\n') });
  const d = await sb.down();
  io.out(formatDown(d, prefix));
  return d.failed.length || d.routers.some((r) => r.how === 'survived') ? 1 : 0;
}

async function status(argv: string[], io: CliIo): Promise<number> {
  const { values: v, positionals } = parse(argv, { prefix: { type: 'string' }, json: { type: 'boolean' } });
  if (v.help) {
    io.out(STATUS_HELP);
    return 0;
  }
  if (positionals.length) throw new ConfigError('', `unexpected argument "${positionals[0]}"`);
  const prefix = checkPrefix((v.prefix as string | undefined) ?? DEFAULT_PREFIX);
  const sb = new Sandbox({ prefix });
  const s = await sb.status();
  if (v.json) {
    io.out(
      JSON.stringify(
        {
          prefix: s.prefix,
          dir: s.dir,
          exists: !!s.state,
          ready: !!s.state?.readyAt,
          hosts: s.hosts.map((h) => ({
            nickname: h.host.nickname,
            netns: h.host.netns,
            netnsExists: h.netnsExists,
            address: h.host.address,
            socket: h.host.socket,
            pid: h.host.pid,
            alive: h.alive,
            peers: h.report?.mesh?.peers.length,
            established: h.report?.mesh?.connections.filter((c) => c.state === 'established').length,
            ipam: h.report?.ipam.status,
            error: h.error,
          })),
          pods: s.pods.map((p) => ({ name: p.pod.name, host: p.pod.host, address: p.pod.cidr, netnsExists: p.netnsExists, ...(p.pod.k8s ? { pod: `${p.pod.k8s.namespace}/${p.pod.k8s.name}`, ports: p.pod.k8s.ports } : {}) })),
          strays: s.strays,
          kube: await kubeStatus(s.state),
        },
        null,
        2,
      ) + '\n',
    );
  } else {
    io.out(formatStatus(s));
    const k = await kubeStatus(s.state);
    if (k) io.out(formatKubeStatus(k));
  }
  return 0;
}
