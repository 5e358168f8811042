/**
 * The sandbox in Kubernetes mode (`weft sandbox up --kube`): the test API server (`weft
 * kube-apiserver`) runs detached in the underlay's namespace at 172.30.0.1:6443 with a Node per
 * host, and every router gets `--kubeconfig`/`--node-name` instead of `--peers`, so the mesh
 * forms from the Nodes alone. The machine's own namespace reaches the server through its unix
 * socket in the sandbox directory (src/kube/apiserver/admin.ts).
 *
 * Why it is this way: the plain sandbox builds the hosts' router arguments with `--peers`;
 * rather than a second code path there, Kubernetes mode rewrites those arguments once the hosts
 * are recorded and before any router starts, so restarts (`startRouter`) reuse them unchanged.
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { RouterClient } from '../common/client';
import { apiRequest, type AdminTarget } from '../kube/apiserver/admin';
import { apiServerArgv } from '../kube/apiserver/cli';
import type { PolicyReport } from '../router/policy';
import { ipBatch } from '../sys/exec';
import { isAlive, processArgv, spawnDetached } from '../sys/process';
import type { SandboxCore } from './base';
import { sleep } from './pool';
import type { HostRecord, SandboxState } from './state';
import { netnsPath, SandboxError, UNDERLAY_BRIDGE } from './types';
import { exists, fmtMs, tail } from './util';
import { isoTime } from '../common/time';
import type { KubeObject } from '../common/kube-object';

/** Where the API server listens inside the underlay namespace. */
export const KUBE_API_ADDRESS = '172.30.0.1';
export const KUBE_API_PORT = 6443;

/** Router flags Kubernetes mode sets itself; `--router-args` must not repeat them. */
export const KUBE_ROUTER_FLAGS = ['--kubeconfig', '--node-name', '--peers'];

/** A sandbox host's Node name: its nickname (host1, host2, ...). */
export const nodeName = (h: Pick<HostRecord, 'nickname'>): string => h.nickname;

/** The admin target of a running Kubernetes-mode sandbox. */
export function kubeApi(st: SandboxState | undefined, timeoutMs = 10_000): AdminTarget {
  if (!st) throw new SandboxError('no sandbox (start one with weft sandbox up --kube)');
  if (!st.kube) throw new SandboxError(`sandbox ${st.prefix} is not in Kubernetes mode (start it with weft sandbox up --kube)`);
  return { socket: st.kube.socket, timeoutMs };
}

/** True when `pid` is this sandbox's API server (guards against a reused pid). */
export function isApiServer(st: SandboxState, pid = st.kube?.pid): boolean {
  if (!pid || !st.kube || !isAlive(pid)) return false;
  const argv = processArgv(pid);
  return !!argv && argv.includes('kube-apiserver') && argv.includes(st.kube.socket);
}

/**
 * Records the API server, rewrites every host's router arguments for Kubernetes mode, and
 * starts the server with a Node per host; resolves once its socket and kubeconfig exist.
 */
export async function startKubeApi(sb: SandboxCore, deadlineMs: number, signal?: AbortSignal): Promise<string> {
  const st = sb.record!;
  const socket = join(st.dir, 'api.sock');
  const kubeconfig = join(st.dir, 'kubeconfig');
  const listen = `${KUBE_API_ADDRESS}:${KUBE_API_PORT}`;
  st.kube = {
    listen,
    socket,
    kubeconfig,
    logFile: join(st.dir, 'apiserver.log'),
    argv: apiServerArgv({ listen, socket, kubeconfig, nodes: st.hosts.map((h) => [nodeName(h), h.address]) }),
  };
  for (const h of st.hosts) h.routerArgv = kubeRouterArgv(h.routerArgv, kubeconfig, nodeName(h));
  await sb.persist();
  await ipBatch([`addr add ${KUBE_API_ADDRESS}/24 dev ${UNDERLAY_BRIDGE}`], { netns: netnsPath(st.underlay.netns) });
  await spawnApiServer(sb, deadlineMs, signal);
  return listen;
}

/** Starts the recorded API server (again: a restart begins with no objects but its Nodes). */
export async function spawnApiServer(sb: SandboxCore, deadlineMs: number, signal?: AbortSignal): Promise<number> {
  const st = sb.record!;
  const k = st.kube!;
  if (isApiServer(st)) throw new SandboxError(`the API server already runs (pid ${k.pid})`);
  await fs.rm(k.socket, { force: true });
  await fs.rm(k.kubeconfig, { force: true });
  await fs.appendFile(k.logFile, `--- ${isoTime()} ${st.weft} ${k.argv.join(' ')}\n`);
  k.pid = await spawnDetached(st.weft, k.argv, { netns: netnsPath(st.underlay.netns), logFile: k.logFile });
  await sb.persist();
  const deadline = Date.now() + deadlineMs;
  while (!((await exists(k.socket)) && (await exists(k.kubeconfig)))) {
    if (!isAlive(k.pid)) throw new SandboxError(`the API server (pid ${k.pid}) exited; its log ${k.logFile} ends:\n${await tail(k.logFile, 12)}`);
    if (Date.now() >= deadline) throw new SandboxError(`the API server did not listen within ${fmtMs(deadlineMs)}; its log ${k.logFile} ends:\n${await tail(k.logFile, 12)}`);
    await sleep(100, signal);
  }
  return k.pid;
}

/** A host's router arguments in Kubernetes mode: no `--peers`, the kubeconfig and its Node's name. */
export function kubeRouterArgv(argv: readonly string[], kubeconfig: string, node: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!.split('=')[0]!;
    if (KUBE_ROUTER_FLAGS.includes(flag)) {
      if (!argv[i]!.includes('=')) i++;
      continue;
    }
    out.push(argv[i]!);
  }
  return [...out, '--kubeconfig', kubeconfig, '--node-name', node];
}

export interface NodeCondition {
  node: string;
  /** NetworkUnavailable: 'False' once the router's data path is ready; undefined before it says. */
  networkUnavailable?: string;
  reason?: string;
  ready?: string;
  internalIP?: string;
}

/** Every Node the API server holds, with the conditions the sandbox shows. */
export async function nodeConditions(api: AdminTarget): Promise<NodeCondition[]> {
  const list = (await apiRequest(api, 'GET', '/api/v1/nodes')) as { items: KubeObject[] };
  return list.items.map((n) => {
    const status = n.status as { conditions?: { type: string; status: string; reason?: string }[]; addresses?: { type: string; address: string }[] } | undefined;
    const c = (t: string) => status?.conditions?.find((x) => x.type === t);
    return {
      node: n.metadata.name ?? '?',
      networkUnavailable: c('NetworkUnavailable')?.status,
      reason: c('NetworkUnavailable')?.reason,
      ready: c('Ready')?.status,
      internalIP: status?.addresses?.find((a) => a.type === 'InternalIP')?.address,
    };
  });
}

/** Waits until every host's Node has NetworkUnavailable=False (its router set it). */
export async function waitNodesReady(sb: SandboxCore, deadlineMs: number, signal?: AbortSignal): Promise<NodeCondition[]> {
  const api = kubeApi(sb.record, 3000);
  const want = sb.hosts.map(nodeName);
  const deadline = Date.now() + deadlineMs;
  let last: NodeCondition[] = [];
  let err = '';
  for (;;) {
    signal?.throwIfAborted();
    try {
      last = await nodeConditions(api);
      const ok = want.every((n) => last.find((c) => c.node === n)?.networkUnavailable === 'False');
      if (ok) return last.filter((c) => want.includes(c.node));
    } catch (e) {
      err = (e as Error).message;
    }
    if (Date.now() >= deadline) {
      const seen = want.map((n) => `${n}:${last.find((c) => c.node === n)?.networkUnavailable ?? '-'}`).join(' ');
      throw new SandboxError(`Nodes' NetworkUnavailable not False within ${fmtMs(deadlineMs)} (${seen})${err ? `; last error: ${err}` : ''}`);
    }
    await sleep(250, signal);
  }
}

/**
 * Waits until every router enforces the API as of resourceVersion `rv` (its policy source is
 * synced, has nothing pending, and its enforced version reached `rv`).
 */
export async function waitEnforced(sockets: readonly string[], rv: bigint, deadlineMs: number, signal?: AbortSignal): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  let last: (PolicyReport | string)[] = [];
  for (;;) {
    signal?.throwIfAborted();
    last = await Promise.all(sockets.map((s) => new RouterClient({ socket: s, timeoutMs: 3000 }).get<PolicyReport>('/v1/policy').catch((e: Error) => e.message)));
    const ok = last.every((p) => typeof p !== 'string' && p.source?.synced && !p.source.pending && BigInt(p.source.enforcedVersion ?? '0') >= rv);
    if (ok) return;
    if (Date.now() >= deadline) {
      const seen = last.map((p) => (typeof p === 'string' ? p : p.enabled === false ? 'policy off' : `enforced ${p.source?.enforcedVersion ?? '-'}${p.source?.pending ? ' (pending)' : ''}`)).join('; ');
      throw new SandboxError(`routers did not enforce resourceVersion ${rv} within ${fmtMs(deadlineMs)}: ${seen}`);
    }
    await sleep(100, signal);
  }
}

/** The resourceVersion of an object the API returned, as a number (0 when absent). */
export const rvOf = (o: unknown): bigint => BigInt((o as KubeObject | undefined)?.metadata?.resourceVersion ?? '0');

/** The Kubernetes part of `weft sandbox status`: the API server and the Nodes' conditions. */
export async function kubeStatus(st: SandboxState | undefined): Promise<{ listen: string; pid?: number; alive: boolean; nodes?: NodeCondition[]; error?: string } | undefined> {
  if (!st?.kube) return undefined;
  const alive = isApiServer(st);
  const out = { listen: st.kube.listen, pid: st.kube.pid, alive };
  if (!alive) return out;
  try {
    return { ...out, nodes: await nodeConditions(kubeApi(st, 3000)) };
  } catch (e) {
    return { ...out, error: (e as Error).message };
  }
}

export function formatKubeStatus(k: NonNullable<Awaited<ReturnType<typeof kubeStatus>>>): string {
  const lines = [`API server: ${k.listen} (in the underlay namespace), pid ${k.pid ?? '-'}, ${k.alive ? 'running' : 'NOT running'}`];
  if (k.error) lines.push(`  (no answer: ${k.error})`);
  for (const n of k.nodes ?? []) {
    lines.push(`  Node ${n.node.padEnd(8)} ${(n.internalIP ?? '-').padEnd(14)} Ready=${n.ready ?? '-'} NetworkUnavailable=${n.networkUnavailable ?? '-'}${n.reason ? ` (${n.reason})` : ''}`);
  }
  return lines.join('\n') + '\n';
}
