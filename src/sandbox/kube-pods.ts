/**
 * Manifests in the sandbox's Kubernetes mode (`up --kube --manifests DIR`, `apply FILE`,
 * `delete FILE`): Namespaces and NetworkPolicies go to the API server; every Pod becomes a
 * sandbox pod as well, as a scheduler and kubelet would make it: its Pod object is created on
 * a host's Node, the real plugin attaches a namespace with CNI_ARGS naming the Pod, its address
 * is written to the Pod's status, and a `weft probe-agent serve` (detached, recorded) listens
 * on the ports its containers declare.
 *
 * Why it is this way: a change either happens whole or not at all. Everything is read and
 * checked (kinds, names, hosts) before the first request; when a request or an attachment fails
 * halfway, the objects this change created and the pods it attached are removed again, and the
 * error names the file and document. A change is done when every router enforces it (its
 * policy source reached the change's resourceVersion), so a probe right after sees it.
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, KubeApiError } from '../common/errors';
import { apiRequest, applyObject, pathOf, type AdminTarget } from '../kube/apiserver/admin';
import { readManifests, servedPorts, type ManifestObject } from '../kube/manifests';
import { run } from '../sys/exec';
import { isAlive, killAndWait, processArgv, spawnDetached } from '../sys/process';
import { kubeApi, nodeName, rvOf, waitEnforced } from './kube';
import { mapPool, sleep } from './pool';
import type { SandboxCore } from './base';
import type { PodRecord } from './state';
import { netnsPath, SandboxError, type SandboxPod } from './types';
import { fmtMs, tail } from './util';
import type { KubeObject } from '../common/kube-object';

/** What the Kubernetes pods need of a sandbox: its records, and adding and removing pods (Sandbox is one). */
interface Sandbox extends SandboxCore {
  addPods(hostIndex: number, count: number, signal?: AbortSignal, k8s?: PodRecord['k8s']): Promise<SandboxPod[]>;
  removePod(pod: SandboxPod | string): Promise<void>;
}

/** Names a sandbox host for a Pod: `host2` (its Node), or `2`. */
export const HOST_ANNOTATION = 'weft.dev/host';

/** Manifests read and checked, Pods given a host (index) unless placed at apply time. */
export interface ManifestPlan {
  objects: ManifestObject[];
  /** Host index per Pod object given one by annotation or nodeName (by `source`). */
  placed: Map<string, number>;
}

export interface Applied {
  created: number;
  updated: number;
  pods: string[];
  /** The newest resourceVersion of the change, which every router enforces now. */
  rv: bigint;
  ms: number;
}

type K8s = NonNullable<PodRecord['k8s']>;
const keyOf = (o: KubeObject) => `${o.metadata.namespace ?? 'default'}/${o.metadata.name}`;

function placement(m: ManifestObject, hosts: number): number | undefined {
  const a = m.object.metadata.annotations?.[HOST_ANNOTATION];
  const n = (m.object.spec as { nodeName?: string } | undefined)?.nodeName;
  const [field, v] = a !== undefined ? [`metadata.annotations["${HOST_ANNOTATION}"]`, a] : n !== undefined ? ['spec.nodeName', n] : [];
  if (v === undefined) return undefined;
  const i = Number(/^(?:host)?(\d+)$/.exec(String(v))?.[1] ?? NaN);
  if (!(i >= 1 && i <= hosts)) throw new ConfigError(`${m.source}: ${field}`, `"${v}" is not a sandbox host (host1..host${hosts})`);
  return i;
}

/** Reads a file or directory of manifests and checks every object, before anything is made. */
export async function loadManifests(path: string, hosts: number): Promise<ManifestPlan> {
  const objects = await readManifests(path);
  const placed = new Map<string, number>();
  const seen = new Set<string>();
  for (const m of objects) {
    if (m.object.kind !== 'Pod') continue;
    m.object.metadata.namespace ??= 'default';
    if (seen.has(keyOf(m.object))) throw new ConfigError(m.source, `Pod ${keyOf(m.object)} appears twice`);
    seen.add(keyOf(m.object));
    const i = placement(m, hosts);
    if (i !== undefined) placed.set(m.source, i);
  }
  return { objects, placed };
}

export const describeApplied = (a: Applied): string =>
  `${a.created} created, ${a.updated} replaced, ${a.pods.length} pods attached and serving; routers enforce resourceVersion ${a.rv} (${fmtMs(a.ms)})`;

/** The sandbox pod standing for a Pod, if any. */
export const podFor = (sb: Sandbox, key: string) => sb.pods.find((p) => p.k8s && `${p.k8s.namespace}/${p.k8s.name}` === key);

/** Creates or replaces the objects, attaches new Pods; all or nothing. */
export async function applyKube(sb: Sandbox, plan: ManifestPlan, o: { deadlineMs: number; signal?: AbortSignal }): Promise<Applied> {
  const t0 = Date.now();
  const st = sb.record!;
  const api = kubeApi(st);
  const hostCount = st.hosts.length;
  for (const [source, i] of plan.placed) if (i > hostCount) throw new ConfigError(source, `host${i} is not in the sandbox (host1..host${hostCount})`);
  const nss = plan.objects.filter((m) => m.object.kind === 'Namespace');
  const rest = plan.objects.filter((m) => m.object.kind !== 'Namespace');
  // new Pods go round robin over the hosts, after the sandbox's Kubernetes pods so far
  let rr = sb.pods.filter((p) => p.k8s).length;
  const newPods: { m: ManifestObject; host: number }[] = [];
  const madeObjects: ManifestObject[] = [];
  const madePods: string[] = [];
  let rv = 0n;
  const bump = (x: unknown) => (rv = rvOf(x) > rv ? rvOf(x) : rv);
  let updated = 0;
  try {
    for (const m of [...nss, ...rest]) {
      let obj = m.object;
      const isNewPod = obj.kind === 'Pod' && !podFor(sb, keyOf(obj));
      if (obj.kind === 'Pod') {
        const host = podFor(sb, keyOf(obj))?.host ?? plan.placed.get(m.source) ?? (rr++ % hostCount) + 1;
        obj = { ...obj, spec: { ...(obj.spec as object), nodeName: nodeName(sb.host(host)) } };
        if (isNewPod) newPods.push({ m: { ...m, object: obj }, host });
      }
      const existed = await apiRequest(api, 'GET', pathOf(obj)).then(
        () => true,
        (e: KubeApiError) => (e.code === 404 ? false : Promise.reject(e)),
      );
      try {
        bump(await applyObject(api, obj));
      } catch (e) {
        throw new SandboxError(`${m.source}: ${(e as Error).message}`);
      }
      if (existed) updated++;
      else madeObjects.push({ ...m, object: obj });
      // a replaced Pod keeps its sandbox pod: its address goes back into the status
      const kept = obj.kind === 'Pod' && !isNewPod ? podFor(sb, keyOf(obj)) : undefined;
      if (kept?.address) bump(await podStatus(api, obj, kept.address));
    }
    // attachments: hosts in parallel, one at a time per host (pod names are numbered per host)
    const byHost = new Map<number, { m: ManifestObject; host: number }[]>();
    for (const p of newPods) byHost.set(p.host, [...(byHost.get(p.host) ?? []), p]);
    await mapPool([...byHost.values()], 8, async (list) => {
      for (const { m, host } of list) {
        o.signal?.throwIfAborted();
        const specs = servedPorts(m.object).filter((s) => s.protocol !== 'sctp');
        const k8s: K8s = { namespace: m.object.metadata.namespace!, name: m.object.metadata.name!, ports: specs.map((s) => `${s.protocol}/${s.port}`) };
        let pod;
        try {
          [pod] = await sb.addPods(host, 1, o.signal, k8s);
        } catch (e) {
          throw new SandboxError(`${m.source}: Pod ${keyOf(m.object)} on host${host}: ${(e as Error).message}`);
        }
        madePods.push(pod!.name);
        bump(await podStatus(api, m.object, pod!.address!));
        if (specs.length) await serveAgent(sb, pod!.name, o.deadlineMs, o.signal);
      }
    });
    await waitEnforced(sb.hosts.map((h) => h.socket), rv, o.deadlineMs, o.signal);
  } catch (e) {
    sb.say(`undoing this change: ${madePods.length} pods, ${madeObjects.length} objects...`);
    await undo(sb, api, madePods, madeObjects).catch((u: Error) => sb.say(`undo failed too: ${u.message}`));
    throw e;
  }
  return { created: madeObjects.length, updated, pods: madePods, rv, ms: Date.now() - t0 };
}

function podStatus(api: AdminTarget, pod: KubeObject, ip: string): Promise<unknown> {
  return apiRequest(api, 'PATCH', `${pathOf(pod)}/status`, { status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] } }, 'application/merge-patch+json');
}

async function undo(sb: Sandbox, api: AdminTarget, pods: string[], objs: ManifestObject[]): Promise<void> {
  for (const name of pods) await detachPod(sb, name);
  // a namespace the failed attachment made before the plugin refused is not in the record
  const known = new Set([sb.underlayNetns, ...sb.hosts.map((h) => h.netns), ...sb.pods.map((p) => p.name)]);
  for (const ns of await sb.namespaces()) if (!known.has(ns) && /-p\d+$/.test(ns)) await run('ip', ['netns', 'del', ns]).catch(() => undefined);
  await deleteObjects(api, objs);
}

/** Deletes the objects (Namespaces last); returns the newest resourceVersion of the deletions. */
async function deleteObjects(api: AdminTarget, objs: readonly ManifestObject[]): Promise<{ deleted: number; rv: bigint }> {
  const ordered = [...objs.filter((m) => m.object.kind !== 'Namespace').reverse(), ...objs.filter((m) => m.object.kind === 'Namespace').reverse()];
  let rv = 0n;
  let deleted = 0;
  for (const m of ordered) {
    try {
      const r = rvOf(await apiRequest(api, 'DELETE', pathOf(m.object)));
      if (r > rv) rv = r;
      deleted++;
    } catch (e) {
      if (!(e instanceof KubeApiError && e.code === 404)) throw new SandboxError(`${m.source}: ${(e as Error).message}`);
    }
  }
  return { deleted, rv };
}

/** Starts the pod's probe agent (its declared TCP/UDP ports) detached; resolves once it listens. */
async function serveAgent(sb: Sandbox, podName: string, deadlineMs: number, signal?: AbortSignal): Promise<number> {
  const st = sb.record!;
  const rec = st.pods.find((p) => p.name === podName)!;
  const logFile = join(st.dir, 'pods', `${podName}.log`);
  await fs.mkdir(join(st.dir, 'pods'), { recursive: true, mode: 0o700 });
  const pid = await spawnDetached(st.weft, ['probe-agent', 'serve', ...rec.k8s!.ports.map((p) => p.replace('/', ':'))], { netns: netnsPath(podName), logFile });
  rec.k8s = { ...rec.k8s!, agentPid: pid, agentLog: logFile };
  await sb.persist();
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const text = await fs.readFile(logFile, 'utf8').catch(() => '');
    if (/^ready$/m.test(text)) return pid;
    if (!isAlive(pid)) throw new SandboxError(`probe agent of ${podName} (pid ${pid}) exited; ${logFile} ends:\n${await tail(logFile, 6)}`);
    if (Date.now() >= deadline) throw new SandboxError(`probe agent of ${podName} not listening within ${fmtMs(deadlineMs)}`);
    await sleep(50, signal);
  }
}

/** Stops a pod's probe agent, detaches it (CNI DEL) and deletes its namespace. */
async function detachPod(sb: Sandbox, podName: string): Promise<void> {
  const rec = sb.record?.pods.find((p) => p.name === podName);
  if (!rec) return;
  const pid = rec.k8s?.agentPid;
  if (pid && isAlive(pid) && processArgv(pid)?.includes('probe-agent')) await killAndWait(pid, 'SIGKILL', 5000);
  await sb.removePod(podName);
}

/** Deletes the objects of a file; Pods in it lose their sandbox pod first. */
export async function deleteKube(sb: Sandbox, plan: ManifestPlan, o: { deadlineMs: number; signal?: AbortSignal }): Promise<{ deleted: number; pods: string[]; rv: bigint; ms: number }> {
  const t0 = Date.now();
  const api = kubeApi(sb.record);
  const pods: string[] = [];
  for (const m of plan.objects) {
    if (m.object.kind !== 'Pod') continue;
    const p = podFor(sb, keyOf(m.object));
    if (p) {
      await detachPod(sb, p.name);
      pods.push(p.name);
    }
  }
  // a Namespace's Pods go with it
  for (const m of plan.objects.filter((x) => x.object.kind === 'Namespace')) {
    for (const p of sb.pods.filter((x) => x.k8s?.namespace === m.object.metadata.name)) {
      await detachPod(sb, p.name);
      pods.push(p.name);
    }
  }
  const { deleted, rv } = await deleteObjects(api, plan.objects);
  if (rv > 0n) await waitEnforced(sb.hosts.map((h) => h.socket), rv, o.deadlineMs, o.signal);
  return { deleted, pods, rv, ms: Date.now() - t0 };
}
