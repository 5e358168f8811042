/** `status` and `down` of a sandbox, from its record and from what carries its prefix. */
import { promises as fs } from 'node:fs';
import { run } from '../sys/exec';
import { isAlive, netnsPids, parentPid, processArgv, terminate } from '../sys/process';
import type { SandboxCore } from './base';
import { releaseNeighLimits } from './neigh';
import { SANDBOX_ROOT } from './options';
import { mapPool } from './pool';
import { readState, type SandboxState } from './state';
import type { DownResult, HostStatus, SandboxStatus } from './types';
import { exists } from './util';

export async function sandboxStatus(sb: SandboxCore): Promise<SandboxStatus> {
  await sb.load();
  const all = await sb.namespaces();
  const known = new Set([...(sb.record ? [sb.underlayNetns] : []), ...sb.hosts.map((h) => h.netns), ...sb.pods.map((p) => p.name)]);
  const hosts = await Promise.all(
    sb.hosts.map(async (h): Promise<HostStatus> => {
      const alive = sb.isRouter(h);
      const hs: HostStatus = { host: h, netnsExists: all.includes(h.netns), alive };
      if (alive) {
        try {
          hs.report = await sb.report(h, 3000);
        } catch (e) {
          hs.error = (e as Error).message;
        }
      }
      return hs;
    }),
  );
  return {
    prefix: sb.prefix,
    dir: sb.dir,
    state: sb.record,
    hosts,
    pods: sb.pods.map((p) => ({ pod: p, netnsExists: all.includes(p.name) })),
    strays: all.filter((n) => !known.has(n)),
  };
}

/**
 * Removes the sandbox: routers (SIGTERM, then SIGKILL after `graceMs`), every namespace with
 * the prefix (recorded or not), and the sandbox directory. Idempotent.
 */
export async function downSandbox(sb: SandboxCore, graceMs = 5000): Promise<DownResult> {
  let state: SandboxState | undefined;
  try {
    state = await readState(sb.dir);
  } catch (e) {
    sb.say(`ignoring a damaged state file: ${(e as Error).message}`);
  }
  state ??= sb.record;
  const namespaces = await sb.namespaces();
  const hosts = state?.hosts ?? [];

  // routers: the recorded pids (when still the same process), and any router found inside
  // one of the namespaces (a crash may have lost its pid)
  const routerPids = new Map<number, string | undefined>();
  for (const h of hosts) if (h.pid && sb.isRouter(h)) routerPids.set(h.pid, h.nickname);
  const candidates: { pid: number; netns: string; argv: string[] }[] = [];
  for (const ns of namespaces) {
    for (const pid of await netnsPids(ns)) {
      if (routerPids.has(pid)) continue;
      const argv = processArgv(pid) ?? [];
      if (argv.includes('router') && argv.includes('--socket')) routerPids.set(pid, hosts.find((h) => h.netns === ns)?.nickname ?? ns);
      else if (argv.length) candidates.push({ pid, netns: ns, argv });
    }
  }
  // what a router started (its probes) goes with it, and so do Kubernetes mode's API server and
  // pods' probe agents (inside this sandbox's namespaces); anything else is someone else's
  const children = candidates.filter((c) => routerPids.has(parentPid(c.pid) ?? -1) || c.argv.includes('kube-apiserver') || c.argv.includes('probe-agent'));
  const terms = await terminate([...routerPids.keys()], graceMs);
  const routers = terms.map((t) => ({ ...t, host: routerPids.get(t.pid) }));
  await terminate(
    children.map((c) => c.pid),
    1000,
  );
  const others: DownResult['others'] = candidates
    .filter((c) => !children.includes(c) && isAlive(c.pid))
    .map((c) => ({ pid: c.pid, netns: c.netns, cmd: c.argv.join(' ').slice(0, 80) }));

  // pods first, then hosts, then the underlay
  const order = (n: string) => (n === `${sb.prefix}-ul` ? 2 : /-p\d+$/.test(n) ? 0 : 1);
  const removed: string[] = [];
  const failed: DownResult['failed'] = [];
  await mapPool(
    [...namespaces].sort((a, b) => order(a) - order(b)),
    8,
    async (ns) => {
      try {
        await run('ip', ['netns', 'del', ns]);
        removed.push(ns);
      } catch (e) {
        failed.push({ netns: ns, error: (e as Error).message });
      }
    },
  );

  let dirRemoved: string | undefined;
  if (await exists(sb.dir)) {
    await fs.rm(sb.dir, { recursive: true, force: true });
    dirRemoved = sb.dir;
  }
  // the neighbour table limits it raised, once its namespaces (and their entries) are gone
  const neigh = await releaseNeighLimits(sb.prefix, state?.neigh?.original).catch((e: Error) => {
    failed.push({ netns: '(neighbour table limits)', error: e.message });
    return undefined;
  });
  await fs.rmdir(SANDBOX_ROOT).catch(() => undefined); // only when empty
  return { routers, namespaces: removed.sort(), failed, others, dirRemoved, neigh };
}
