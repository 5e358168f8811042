/**
 * `weft kube-apiserver`: the test API server as a process of its own, for `weft sandbox up
 * --kube` (which starts it detached inside the sandbox's underlay namespace, so every host
 * reaches it at an underlay address) and for trying the Kubernetes mode by hand.
 */
import { ConfigError } from '../../common/errors';
import { parse, type CliIo } from '../../common/command';
import { writeKubeconfig } from './kubeconfig';
import { startApiServer, type RunningApiServer } from './server';
import { resourceByPlural } from './types';
import { isoTime } from '../../common/time';
import type { KubeObject } from '../../common/kube-object';

export const KUBE_APISERVER_HELP = `Usage: weft kube-apiserver --listen HOST:PORT [options]

A small Kubernetes API server (plain HTTP, objects in memory) speaking the list/watch protocol
for Nodes, Namespaces, Pods, ConfigMaps, Secrets, Leases and NetworkPolicies. For tests and
the sandbox only: no authorization beyond an optional token, no persistence.

Options:
  --listen HOST:PORT     address to listen on (port 0: any free one)
  --socket PATH          also listen on this unix socket (reachable from any namespace)
  --kubeconfig-out FILE  write a kubeconfig for clients (server URL, insecure-skip-tls-verify)
  --token T              require this bearer token (also written to the kubeconfig)
  --node NAME=IP         create a Node with this InternalIP at start (repeatable)

Example:
  weft kube-apiserver --listen 172.30.0.1:6443 --socket /run/weft-sandbox/api.sock \\
    --kubeconfig-out /run/weft-sandbox/kubeconfig \\
    --node h1=172.30.0.11 --node h2=172.30.0.12
`;

/** A Node as a kubelet registers it, for the sandbox's hosts. */
export function nodeFor(name: string, internalIp: string): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels: { 'kubernetes.io/hostname': name, 'kubernetes.io/os': 'linux' } },
    spec: {},
    status: {
      addresses: [
        { type: 'InternalIP', address: internalIp },
        { type: 'Hostname', address: name },
      ],
      conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'sandbox host', lastTransitionTime: isoTime().replace(/\.\d+Z$/, 'Z') }],
    },
  };
}

/**
 * The arguments of `weft kube-apiserver` as the sandbox and the test beds start it: listening
 * on `listen` (inside the underlay namespace), its unix socket and kubeconfig at the given
 * paths, and a Node per host (name and InternalIP).
 */
export function apiServerArgv(o: { listen: string; socket: string; kubeconfig: string; nodes: readonly (readonly [string, string])[] }): string[] {
  return ['kube-apiserver', '--listen', o.listen, '--socket', o.socket, '--kubeconfig-out', o.kubeconfig, ...o.nodes.flatMap(([name, ip]) => ['--node', `${name}=${ip}`])];
}

export function parseListen(v: string | undefined): { host: string; port: number } {
  const m = /^(.+):(\d+)$/.exec(v ?? '');
  if (!m || Number(m[2]) > 65535) throw new ConfigError('--listen', `"${v ?? ''}" is not HOST:PORT`);
  return { host: m[1]!.replace(/^\[(.*)\]$/, '$1'), port: Number(m[2]) };
}

/** Starts the server from command-line arguments; returns it, or undefined for --help. */
export async function startFromArgs(argv: string[], io: CliIo): Promise<RunningApiServer | undefined> {
  const { values: v } = parse(argv, {
    listen: { type: 'string' },
    socket: { type: 'string' },
    'kubeconfig-out': { type: 'string' },
    token: { type: 'string' },
    node: { type: 'string', multiple: true },
  }, false);
  if (v.help) {
    io.out(KUBE_APISERVER_HELP);
    return undefined;
  }
  const { host, port } = parseListen(v.listen as string | undefined);
  const nodes = ((v.node as string[] | undefined) ?? []).map((s) => {
    const m = /^([^=]+)=(\d+\.\d+\.\d+\.\d+)$/.exec(s);
    if (!m) throw new ConfigError('--node', `"${s}" is not NAME=IPv4`);
    return nodeFor(m[1]!, m[2]!);
  });
  const token = v.token as string | undefined;
  const srv = await startApiServer({ host, port, token, socket: v.socket as string | undefined });
  try {
    for (const n of nodes) srv.store.create(resourceByPlural('nodes')!, undefined, n);
    const out = v['kubeconfig-out'] as string | undefined;
    if (out) await writeKubeconfig(out, srv.url, { token });
  } catch (e) {
    await srv.close();
    throw e;
  }
  io.out(`weft kube-apiserver: listening on ${srv.url}${srv.socket ? ` and ${srv.socket}` : ''}\n`);
  return srv;
}

/** Runs until SIGTERM or SIGINT. */
export async function runKubeApiServer(argv: string[], io: CliIo): Promise<number> {
  const srv = await startFromArgs(argv, io);
  if (!srv) return 0;
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  await srv.close();
  return 0;
}
