/**
 * NetworkPolicy end to end through real routers: host namespaces on an underlay bridge, the
 * test API server (`dist/weft kube-apiserver`) in the underlay's namespace with a Node per host,
 * a router per host in Kubernetes mode (`--kubeconfig`, no peers), pods attached by the real
 * `dist/weft-net` with CNI_ARGS naming them, their Pod objects in the API (created before the
 * attachment, as the scheduler does, and given their address after it, as kubelet does), and a
 * probe agent serving in each. Policies are applied through the API; `apply` resolves once every
 * router enforces the change (its `enforcedVersion` has reached the change's resourceVersion).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cniAsync, cniEnv, netConf, Netns, RouterProc, scope, underlayHosts, uid, until, WEFT } from './netns';
import { ProbeAgents, type ProbeResult } from './probe-agents';
import type { MatrixBed } from './policy-cases';
import { apiRequest, applyObject, type AdminTarget } from '../../src/kube/apiserver/admin';
import { apiServerArgv } from '../../src/kube/apiserver/cli';
import { waitEnforced } from '../../src/sandbox/kube';
import { RouterClient } from '../../src/common/client';
import type { KubeApiError } from '../../src/common/errors';
import type { Truth } from '../../src/policy/matrix';
import { probeMatrix, type MatrixSpec, type MatrixTarget } from '../../src/policy/matrix-run';
import type { PolicyReport } from '../../src/router/policy';
import { FAMILY, TABLE } from '../../src/policy/ruleset';
import type { KubeObject } from '../../src/common/kube-object';

export interface KubePod {
  key: string;
  namespace: string;
  name: string;
  ip: string;
  ns: Netns;
  /** Index of its host (0-based). */
  host: number;
  containerId: string;
}

/** Router timings for tests: quick reconnects and probes. */
const FAST = { WEFT_HEARTBEAT_MS: '500', WEFT_RETRY_MIN_MS: '200', WEFT_RETRY_MAX_MS: '1000', WEFT_PROBE_MS: '1000', WEFT_PROGRAM_MS: '1000' };

const bigRv = (o: unknown) => BigInt((o as KubeObject | undefined)?.metadata?.resourceVersion ?? '0');
const maxRv = (a: bigint, b: bigint) => (a > b ? a : b);

export class KubePolicyBed implements MatrixBed {
  readonly pods: KubePod[] = [];
  readonly routers: RouterProc[] = [];
  readonly api: AdminTarget;
  readonly kubeconfig: string;
  private readonly agents = new ProbeAgents();
  private applied = new Set<string>();
  private lastRv = 0n;

  private constructor(
    readonly tag: string,
    readonly hosts: Netns[] & { ul: Netns },
    readonly dir: string,
    private readonly res: ReturnType<typeof scope>,
  ) {
    this.api = { socket: join(dir, 'api.sock') };
    this.kubeconfig = join(dir, 'kubeconfig');
  }

  /**
   * `n` hosts at `${net}.1..n`, the API server at `${net}.100` with a Node per host (h1..hn),
   * and a router on each; resolves once the mesh is full and every IPAM can allocate.
   */
  static async create(tag: string, net: string, n: number, routerArgs: string[] = []): Promise<KubePolicyBed> {
    const res = scope();
    const dir = mkdtempSync(join(tmpdir(), `weft-${tag}-`));
    res.defer(() => rmSync(dir, { recursive: true, force: true }));
    let bed: KubePolicyBed | undefined;
    try {
      const hosts = underlayHosts(tag, n, net, res.track);
      bed = new KubePolicyBed(tag, hosts, dir, res);
      hosts.ul.run('ip', ['addr', 'add', `${net}.100/24`, 'dev', 'ul0']);
      const argv = apiServerArgv({ listen: `${net}.100:6443`, socket: bed.api.socket, kubeconfig: bed.kubeconfig, nodes: hosts.map((_, i) => [`h${i + 1}`, `${net}.${i + 1}`] as const) });
      const srv = spawn('nsenter', [`--net=${hosts.ul.path}`, '--', WEFT, ...argv], { stdio: 'ignore' });
      res.defer(() => srv.kill('SIGKILL'));
      if (!(await until(() => existsSync(bed!.kubeconfig) && existsSync(bed!.api.socket), 20_000))) throw new Error('the API server did not start');
      for (let i = 0; i < n; i++) {
        const r = res.track(new RouterProc(hosts[i]!, ['--kubeconfig', bed.kubeconfig, '--node-name', `h${i + 1}`, '--nickname', `h${i + 1}`, ...routerArgs], join(dir, `r${i + 1}`), false));
        r.env = FAST;
        r.startTimeoutMs = 90_000; // three routers and their Kubernetes clients starting at once, on a shared machine
        bed.routers.push(r);
      }
      await Promise.all(bed.routers.map((r) => r.start()));
      const established = (r: RouterProc) => r.report().mesh.connections.filter((c: { state: string }) => c.state === 'established').length;
      if (!(await until(() => bed!.routers.every((r) => established(r) === n - 1 && r.report().ipam.status === 'ready'), 60_000))) {
        throw new Error(`no full mesh with IPAM ready: ${bed.routers.map((r) => `${established(r)} ${r.report().ipam.status}`).join('; ')}`);
      }
      return bed;
    } catch (e) {
      if (bed) await bed.destroy();
      else await res.cleanup();
      throw e;
    }
  }

  /** Creates (or replaces) an object through the API; returns it as stored. */
  async put(o: KubeObject): Promise<KubeObject> {
    const out = await applyObject(this.api, o);
    this.lastRv = maxRv(this.lastRv, bigRv(out));
    return out;
  }

  /** Deletes an object through the API. */
  async remove(path: string): Promise<void> {
    this.lastRv = maxRv(this.lastRv, bigRv(await apiRequest(this.api, 'DELETE', path)));
  }

  /** Merge-patches an object (e.g. its labels). */
  async patch(path: string, patch: unknown): Promise<void> {
    this.lastRv = maxRv(this.lastRv, bigRv(await apiRequest(this.api, 'PATCH', path, patch, 'application/merge-patch+json')));
  }

  async namespace(name: string, labels: Record<string, string>): Promise<void> {
    await this.put({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } });
  }

  /**
   * A pod on host `host`: its Pod object (scheduled there), a network namespace attached by
   * dist/weft-net with CNI_ARGS naming it, then the address in the Pod's status.
   */
  async addPod(host: number, namespace: string, name: string, labels: Record<string, string>, ports: { name?: string; containerPort: number; protocol?: string }[]): Promise<KubePod> {
    const path = `/api/v1/namespaces/${namespace}/pods/${name}`;
    await this.put({ apiVersion: 'v1', kind: 'Pod', metadata: { namespace, name, labels }, spec: { nodeName: `h${host + 1}`, containers: [{ name: 'c', image: 'probe', ports }] }, status: { phase: 'Pending' } });
    const ns = this.res.track(Netns.create(`${this.tag}p`));
    const containerId = `${this.tag}-${namespace}-${name}-${uid()}`;
    const r = this.routers[host]!;
    const add = await cniAsync(this.hosts[host]!, cniEnv('ADD', containerId, ns.path, 'eth0', { CNI_ARGS: `K8S_POD_NAMESPACE=${namespace};K8S_POD_NAME=${name}` }), netConf(r.socket));
    if (add.code !== 0) throw new Error(`CNI ADD of ${namespace}/${name}: ${add.stdout} ${add.stderr}`);
    const ip = String(add.json.ips[0].address).split('/')[0]!;
    await this.patch(`${path}/status`, { status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] } });
    const pod: KubePod = { key: `${namespace}/${name}`, namespace, name, ip, ns, host, containerId };
    this.pods.push(pod);
    return pod;
  }

  pod(key: string): KubePod {
    const p = this.pods.find((x) => x.key === key);
    if (!p) throw new Error(`no pod ${key}`);
    return p;
  }

  /** The address of a pod, by key. */
  ip = (key: string): string => this.pod(key).ip;

  serve(pod: KubePod | Netns, specs: readonly MatrixSpec[]): Promise<void> {
    return this.agents.serve(pod instanceof Netns ? pod : pod.ns, specs);
  }

  policyStatus(host: number): Promise<PolicyReport> {
    return new RouterClient({ socket: this.routers[host]!.socket, timeoutMs: 10_000 }).get<PolicyReport>('/v1/policy');
  }

  /** Waits until every router enforces the API as of the last change this bed made. */
  settle(timeoutMs = 30_000): Promise<void> {
    return waitEnforced(this.routers.map((r) => r.socket), this.lastRv, timeoutMs);
  }

  /** Makes the API hold exactly these NetworkPolicies (the ones this bed applied before and not listed are deleted); resolves once every router enforces them. */
  async apply(policies: readonly unknown[]): Promise<void> {
    const want = new Map((policies as KubeObject[]).map((p) => [`${p.metadata.namespace}/${p.metadata.name}`, p]));
    for (const k of this.applied) {
      if (want.has(k)) continue;
      const [ns, name] = k.split('/');
      await this.remove(`/apis/networking.k8s.io/v1/namespaces/${ns}/networkpolicies/${name}`).catch((e: KubeApiError) => {
        if (e.code !== 404) throw e; // deleted by the test itself meanwhile
      });
    }
    for (const p of want.values()) await this.put({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', ...p });
    this.applied = new Set(want.keys());
    await this.settle();
  }

  /** Empties every host's flow sets, so each matrix starts without flows earlier cases allowed. */
  forgetFlows(): void {
    for (const h of this.hosts) for (const set of ['flows', 'flows_np']) h.run('nft', ['flush', 'set', FAMILY, TABLE, set]);
  }

  matrix(specs: readonly MatrixSpec[], expected?: ReadonlyMap<string, Truth>): Promise<Map<string, Truth>> {
    return probeMatrix((src, targets) => this.agents.probe(src.ns, targets), specs, { from: this.pods, expected });
  }

  probe(ns: Netns, targets: readonly MatrixTarget[]): Promise<ProbeResult[]> {
    return this.agents.probe(ns, targets);
  }

  async destroy(): Promise<void> {
    this.agents.destroy();
    await this.res.cleanup();
  }
}
