/**
 * The sandbox's record of what it made, so `down` and `status` work from a later process.
 * Written atomically after every step of `up`, so a crash mid-way still leaves a usable record
 * (and `down` also sweeps namespaces by prefix for anything the record missed).
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import * as z from 'zod/mini';
import { writeFileAtomic, readIfExists } from '../common/fsutil';

export const STATE_FILE = 'state.json';

const hostSchema = z.object({
  /** 1-based. */
  index: z.int(),
  /** "host1": the router's nickname. */
  nickname: z.string(),
  /** Network namespace name, e.g. wsb-h1. */
  netns: z.string(),
  /** Underlay address, e.g. 172.30.0.11. */
  address: z.string(),
  /** The host's veth end on the underlay bridge (inside the underlay namespace), e.g. h1. */
  underlayVeth: z.string(),
  /** Its interface inside the host namespace. */
  ifname: z.string(),
  dir: z.string(),
  stateDir: z.string(),
  socket: z.string(),
  logFile: z.string(),
  /** The full `weft router` argument list, kept so the router can be restarted as it was. */
  routerArgv: z.array(z.string()),
  pid: z.optional(z.int()),
  startedAt: z.optional(z.string()),
});

const podSchema = z.object({
  /** Namespace name, also the container id, e.g. wsb-h1-p1. */
  name: z.string(),
  /** Index of the host it is attached to. */
  host: z.int(),
  containerId: z.string(),
  ifname: z.string(),
  /** Address with prefix length from the plugin's result, e.g. 10.32.0.2/12. */
  cidr: z.optional(z.string()),
  gateway: z.optional(z.string()),
  /** Kubernetes mode: the Pod object it stands for, its served ports and their server (src/sandbox/kube-pods.ts). */
  k8s: z.optional(
    z.object({ namespace: z.string(), name: z.string(), ports: z.array(z.string()), agentPid: z.optional(z.int()), agentLog: z.optional(z.string()) }),
  ),
});

export const stateSchema = z.object({
  version: z.literal(1),
  prefix: z.string(),
  dir: z.string(),
  createdAt: z.string(),
  /** Set once `up` finished; absent while it runs or after it failed. */
  readyAt: z.optional(z.string()),
  mtu: z.int(),
  weft: z.string(),
  plugin: z.string(),
  routerArgs: z.array(z.string()),
  underlay: z.object({
    netns: z.string(),
    bridge: z.string(),
    subnet: z.string(),
    /** Routers find their underlay themselves (`up --underlay discover`); absent: given --advertise-addr. */
    discover: z.optional(z.boolean()),
    /** Hosts have a default route (absent: yes; `up --no-default-route` records false). */
    defaultRoute: z.optional(z.boolean()),
  }),
  hosts: z.array(hostSchema),
  pods: z.array(podSchema),
  /**
   * The machine-wide neighbour table limits this sandbox raised: its need, and the values found
   * before any sandbox raised them (what `down` restores when it is the last one).
   */
  /** Kubernetes mode (`up --kube`): the test API server in the underlay namespace (src/sandbox/kube.ts). */
  kube: z.optional(
    z.object({ listen: z.string(), socket: z.string(), kubeconfig: z.string(), logFile: z.string(), argv: z.array(z.string()), pid: z.optional(z.int()) }),
  ),
  neigh: z.optional(
    z.object({
      need: z.int(),
      original: z.object({ thresh1: z.int(), thresh2: z.int(), thresh3: z.int() }),
    }),
  ),
});

export type HostRecord = z.infer<typeof hostSchema>;
export type PodRecord = z.infer<typeof podSchema>;
export type SandboxState = z.infer<typeof stateSchema>;

export function statePath(dir: string): string {
  return join(dir, STATE_FILE);
}

/** Reads the record, or undefined when there is none. A damaged file is an error naming it. */
export async function readState(dir: string): Promise<SandboxState | undefined> {
  const path = statePath(dir);
  const text = await readIfExists(path);
  if (text === undefined) return undefined;
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: not JSON (${(e as Error).message}); remove it or run weft sandbox down`);
  }
  const r = stateSchema.safeParse(json);
  if (!r.success) throw new Error(`${path}: not a sandbox state file (${r.error.issues[0]?.message ?? 'invalid'})`);
  return r.data;
}

/** Serialises writes from one process; each write replaces the file atomically. */
export class StateWriter {
  private chain: Promise<void> = Promise.resolve();
  constructor(private readonly dir: string) {}

  write(state: SandboxState): Promise<void> {
    const text = JSON.stringify(state, null, 2) + '\n';
    const next = this.chain.then(async () => {
      await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
      await writeFileAtomic(statePath(this.dir), text);
    });
    this.chain = next.catch(() => undefined);
    return next;
  }
}
