/** `weft sandbox apply|delete|probe`: the Kubernetes mode's objects and reachability matrix. */
import { ConfigError } from '../common/errors';
import { addHost, applyKube, checkPrefix, describeMesh, DEFAULT_DEADLINE_MS, DEFAULT_PREFIX, deleteKube, describeApplied, fmtMs, formatProbe, kubeApi, loadManifests, parsePorts, probeJson, probeSandbox, Sandbox } from '../sandbox';
import { SandboxError } from '../sandbox/types';
import { parse, type CliIo } from '../common/command';

export const APPLY_HELP = `Usage: weft sandbox apply FILE|DIR [--prefix NAME] [--wait SECONDS]

Creates or replaces the objects in FILE (or in every .yaml/.yml/.json file of DIR) through the
sandbox's API server (weft sandbox up --kube). A new Pod becomes a sandbox pod: placed on the
host its "weft.dev/host" annotation (host2, or 2) or spec.nodeName names, else round robin;
attached by weft-net with CNI_ARGS naming it; its address written to its status; serving its
declared TCP/UDP container ports. Returns once every router enforces the change. Everything is
checked before anything is made; a failure undoes what this command made and names the file
and document.

Examples:
  weft sandbox apply examples/policy/policies/deny-all-ingress-x.yaml
  weft sandbox apply more-pods.yaml --prefix demo
`;

export const DELETE_HELP = `Usage: weft sandbox delete FILE|DIR [--prefix NAME] [--wait SECONDS]

Deletes the objects in FILE through the sandbox's API server; a Pod's sandbox pod (and a
deleted Namespace's pods) are detached first. Returns once every router enforces the change.

Example:
  weft sandbox delete examples/policy/policies/deny-all-ingress-x.yaml
`;

export const PROBE_HELP = `Usage: weft sandbox probe [--ports tcp/80,udp/81] [--timeout-ms N] [--json] [--prefix NAME]

Probes from every Kubernetes pod of the sandbox to every one, on every port some pod serves
(or the --ports given), all at once, and prints one matrix per protocol and port: rows are
sources, columns destinations, "." reachable, "X" blocked. A TCP probe counts when data comes
back through the connection, a UDP one when the datagram is echoed.

Options:
  --ports LIST     tcp/PORT or udp/PORT, comma-separated (default: the ports the pods declare)
  --timeout-ms N   deadline of each probe (default 1500)
  --json           the matrices as JSON: {pods, matrices: {"tcp/80": {from: {to: bool}}}}

Example:
  weft sandbox probe --ports tcp/80,udp/81
`;

export const ADD_HOST_HELP = `Usage: weft sandbox add-host [--prefix NAME] [--wait SECONDS]

Adds one host to the running sandbox (the next number: PREFIX-hN at 172.30.0.(10+N)) with its
router, leaving the others running. In Kubernetes mode its Node is created and its router gets
no peers: the running routers find it through the API; otherwise it joins through host 1.
Waits until the mesh is full (and the new Node's NetworkUnavailable is False); a failure
removes the host again.

Example:
  weft sandbox add-host --prefix demo
`;

function common(argv: string[], extra: Record<string, { type: 'string' | 'boolean' }> = {}) {
  const { values: v, positionals } = parse(argv, { prefix: { type: 'string' }, wait: { type: 'string' }, ...extra });
  const wait = v.wait as string | undefined;
  if (wait !== undefined && !(/^\d+$/.test(wait) && Number(wait) >= 1 && Number(wait) <= 3600)) throw new ConfigError('--wait', `must be 1..3600 seconds, got "${wait}"`);
  return { v, positionals, prefix: checkPrefix((v.prefix as string | undefined) ?? DEFAULT_PREFIX), deadlineMs: wait ? Number(wait) * 1000 : DEFAULT_DEADLINE_MS };
}

async function openKube(prefix: string, io: CliIo): Promise<Sandbox> {
  const sb = await Sandbox.open({ prefix, log: (l) => io.err(l + '\n') });
  if (!sb.record) throw new SandboxError(`no sandbox with prefix ${prefix} (start one with weft sandbox up --kube${prefix === DEFAULT_PREFIX ? '' : ` --prefix ${prefix}`})`);
  kubeApi(sb.record); // throws when it is not in Kubernetes mode
  return sb;
}

export async function sandboxApplyOrDelete(verb: 'apply' | 'delete', argv: string[], io: CliIo): Promise<number> {
  const { v, positionals, prefix, deadlineMs } = common(argv);
  if (v.help) {
    io.out(verb === 'apply' ? APPLY_HELP : DELETE_HELP);
    return 0;
  }
  if (positionals.length !== 1) throw new ConfigError('FILE', positionals.length ? `one file or directory, got ${positionals.length}` : 'give a manifest file or directory');
  const sb = await openKube(prefix, io);
  const plan = await loadManifests(positionals[0]!, sb.hosts.length);
  try {
    if (verb === 'apply') io.out(`weft sandbox apply: ${describeApplied(await applyKube(sb, plan, { deadlineMs }))}\n`);
    else {
      const d = await deleteKube(sb, plan, { deadlineMs });
      io.out(`weft sandbox delete: ${d.deleted} deleted, ${d.pods.length} pods detached; routers enforce resourceVersion ${d.rv} (${fmtMs(d.ms)})\n`);
    }
  } catch (e) {
    if (e instanceof ConfigError) throw e;
    io.err(`weft sandbox ${verb}: ${(e as Error).message}\n`);
    return 1;
  }
  return 0;
}

export async function sandboxAddHost(argv: string[], io: CliIo): Promise<number> {
  const { v, positionals, prefix, deadlineMs } = common(argv);
  if (v.help) {
    io.out(ADD_HOST_HELP);
    return 0;
  }
  if (positionals.length) throw new ConfigError('', `unexpected argument "${positionals[0]}"`);
  const sb = await Sandbox.open({ prefix, log: (l) => io.err(l + '\n') });
  try {
    const { host, mesh } = await addHost(sb, deadlineMs);
    io.out(`weft sandbox add-host: ${host.nickname} (${host.netns}, ${host.address}, router pid ${host.pid}${sb.record?.kube ? `, Node ${host.nickname}` : ''}); ${describeMesh(mesh, sb.hosts.length)}\n`);
    return 0;
  } catch (e) {
    io.err(`weft sandbox add-host: ${(e as Error).message}\n`);
    return 1;
  }
}

export async function sandboxProbe(argv: string[], io: CliIo): Promise<number> {
  const { v, positionals, prefix } = common(argv, { ports: { type: 'string' }, json: { type: 'boolean' }, 'timeout-ms': { type: 'string' } });
  if (v.help) {
    io.out(PROBE_HELP);
    return 0;
  }
  if (positionals.length) throw new ConfigError('', `unexpected argument "${positionals[0]}"`);
  const t = v['timeout-ms'] as string | undefined;
  if (t !== undefined && !(/^\d+$/.test(t) && Number(t) >= 50 && Number(t) <= 60_000)) throw new ConfigError('--timeout-ms', `must be 50..60000, got "${t}"`);
  const specs = v.ports === undefined ? undefined : parsePorts(v.ports as string);
  const sb = await Sandbox.open({ prefix });
  let r;
  try {
    r = await probeSandbox(sb, specs, t ? { unknownMs: Number(t) } : undefined);
  } catch (e) {
    io.err(`weft sandbox probe: ${(e as Error).message}\n`);
    return 1;
  }
  if (v.json) io.out(JSON.stringify(probeJson(r), null, 2) + '\n');
  else io.out(`${formatProbe(r)}\n${r.pods.length} pods x ${r.specs.length} port${r.specs.length === 1 ? '' : 's'} probed in ${fmtMs(r.ms)} ("." reachable, "X" blocked)\n`);
  return 0;
}
