/**
 * `weft sandbox add-host`: one more host in a running sandbox, without touching the others. In
 * Kubernetes mode its Node is created first (as a kubelet registers it), and its router gets
 * no peers: the running routers see the new Node and connect, which is what issue 9 asks of a
 * node that joins later. Otherwise its router joins through host 1. A failure removes the
 * host again (router, Node, namespace, record).
 */
import { applyObject, deleteObject } from '../kube/apiserver/admin';
import { nodeFor } from '../kube/apiserver/cli';
import { run } from '../sys/exec';
import { kubeApi, kubeRouterArgv, nodeName, waitNodesReady } from './kube';
import { hostAddress, MAX_HOSTS } from './options';
import type { Sandbox } from './sandbox';
import { netnsPath, SandboxError, type MeshWait, type SandboxHost } from './types';
import { describeMesh } from './util';

export async function addHost(sb: Sandbox, deadlineMs: number, signal?: AbortSignal): Promise<{ host: SandboxHost; mesh: MeshWait }> {
  const st = sb.record;
  if (!st) throw new SandboxError(`no sandbox with prefix ${sb.prefix}; start one with weft sandbox up`);
  const i = Math.max(0, ...st.hosts.map((h) => h.index)) + 1;
  if (i > MAX_HOSTS) throw new SandboxError(`the sandbox has its ${MAX_HOSTS} hosts already`);
  const rec = sb.newHost(i, st.kube ? [] : [hostAddress(1)]);
  if (st.kube) rec.routerArgv = kubeRouterArgv(rec.routerArgv, st.kube.kubeconfig, nodeName(rec));
  st.hosts.push(rec);
  await sb.persist();
  let nodeMade = false;
  try {
    await sb.plugHosts([rec], st.mtu);
    if (st.kube) {
      await applyObject(kubeApi(st), nodeFor(nodeName(rec), rec.address));
      nodeMade = true;
    }
    await sb.startRouter(i, deadlineMs);
    const mesh = await sb.waitMesh(deadlineMs, signal);
    if (!mesh.complete) throw new SandboxError(`host${i} did not join: mesh ${describeMesh(mesh, st.hosts.length)}`);
    if (st.kube) await waitNodesReady(sb, deadlineMs, signal);
    return { host: sb.host(i), mesh };
  } catch (e) {
    sb.say(`adding host${i} failed; removing it...`);
    await sb.killRouter(i).catch(() => undefined);
    if (nodeMade) await deleteObject(kubeApi(st), nodeFor(nodeName(rec), rec.address)).catch(() => undefined);
    await run('ip', ['link', 'del', rec.underlayVeth], { netns: netnsPath(st.underlay.netns) }).catch(() => undefined);
    await run('ip', ['netns', 'del', rec.netns]).catch(() => undefined);
    st.hosts = st.hosts.filter((h) => h.index !== i);
    await sb.persist();
    throw e;
  }
}
