/**
 * The CNI verbs' work in the router: POST /v1/cni/add, /v1/cni/del, /v1/cni/check (contracts
 * in src/common/api.ts). The plugin sends one request per verb and prints the answer.
 *
 * ADD makes the host end of the pair while the allocation is being committed (both need only
 * the bridge), then configures the pod's end once the address is durable; any failure undoes
 * what was made before the error is answered. DEL takes the host end down, then releases the
 * address durably, and leaves the deletion of the pair to PodLinks. Every answer can carry the
 * milliseconds of each step (`trace`), the store's fsync apart.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomBytes } from 'node:crypto';
import * as z from 'zod/mini';
import {
  cniAddRequestSchema,
  cniCheckRequestSchema,
  cniDelRequestSchema,
  hostVethName,
  type AttachmentKey,
  type CniAddRequest,
  type CniAddResponse,
  type CniCheckResponse,
  type CniDelResponse,
  type Timing,
} from '../common/api';
import { BadRequestError, ConfigError } from '../common/errors';
import { randomMac } from '../common/ip';
import type { Logger } from '../common/log';
import { zodToConfigError } from '../common/netconf';
import { verifyAttachment } from '../common/pod-check';
import { gatewayKey } from '../datapath/bridge-addrs';
import type { PodLinks } from '../datapath/pod-links';
import type { EnteredBatch } from '../sys/warm';
import type { ApiServer } from './http';
import { IpamApi, type IpamApiComponents } from './ipam-api';

export interface CniApiComponents extends Pick<IpamApiComponents, 'ipam' | 'commit' | 'bridge' | 'gateways'> {
  links: PodLinks;
  /** The pod MTU the router derived. */
  mtu(): number;
  log: Logger;
  /** Counts requests by verb and result (for metrics). */
  observe?: (op: string, result: 'ok' | 'error', seconds: number) => void;
}

/** The request being served: its timing, and what to start when its commit starts. */
interface Served {
  timing: Timing;
  /** Called when the request's change is in memory and its commit (the fsync) begins. */
  onCommit?: () => void;
}
const current = new AsyncLocalStorage<Served>();

/** A commit whose time is added to the current request's `fsync`, and whose start is announced. */
function timedCommit(commit: () => Promise<void>): () => Promise<void> {
  return async () => {
    const served = current.getStore();
    const t0 = performance.now();
    const p = commit();
    served?.onCommit?.();
    try {
      await p;
    } finally {
      if (served) served.timing.fsync = (served.timing.fsync ?? 0) + (performance.now() - t0);
    }
  };
}

function parse<T>(schema: z.ZodMiniType<T>, body: unknown): T {
  const r = schema.safeParse(body);
  if (!r.success) throw new BadRequestError(zodToConfigError(r.error).message);
  return r.data;
}

const keyOf = (r: AttachmentKey): AttachmentKey => ({ network: r.network, containerId: r.containerId, ifname: r.ifname });

export class CniApi {
  private readonly ipamApi: IpamApi;

  constructor(private readonly c: CniApiComponents) {
    this.ipamApi = new IpamApi({ ipam: c.ipam, commit: timedCommit(c.commit), bridge: c.bridge, gateways: c.gateways, mtu: c.mtu, log: c.log });
  }

  register(api: ApiServer): void {
    const served =
      (op: string, h: (b: unknown, t: Timing) => Promise<object>) =>
      (b: unknown): Promise<object> => {
        const timing: Timing = {};
        const t0 = performance.now();
        return current.run({ timing }, async () => {
          try {
            const r = await h(b, timing);
            this.c.observe?.(op, 'ok', (performance.now() - t0) / 1000);
            timing.total = performance.now() - t0;
            return (b as { trace?: unknown })?.trace === true ? { ...r, timing } : r;
          } catch (e) {
            this.c.observe?.(op, 'error', (performance.now() - t0) / 1000);
            throw e;
          }
        });
      };
    api
      .on('POST', '/v1/cni/add', served('add', (b, t) => this.add(b, t)))
      .on('POST', '/v1/cni/del', served('del', (b, t) => this.del(b, t)))
      .on('POST', '/v1/cni/check', served('check', (b, t) => this.check(b, t)));
  }

  async add(body: unknown, timing: Timing = {}): Promise<CniAddResponse> {
    const req = parse(cniAddRequestSchema, body);
    const { bridge, links } = this.c;
    if (req.bridge !== bridge.name) throw new ConfigError('bridge', `"${req.bridge}": this router serves bridge "${bridge.name}"`);
    // the pod MTU has one owner, the data path: a pod above it would lose large packets
    if (req.mtu !== undefined && req.mtu > this.c.mtu()) {
      throw new ConfigError('mtu', `${req.mtu} is above the pod MTU ${this.c.mtu()} this host's data path carries; leave mtu out or lower it`);
    }
    const key = keyOf(req);
    const hostName = hostVethName(key);
    const netns = req.netnsRef ?? req.netns;
    // the pod end's process enters the namespace while the pair is made; one configure takes it
    let entered: EnteredBatch | undefined = links.enter(netns);
    const takeEntered = () => {
      const e = entered;
      entered = undefined;
      return e;
    };
    return links.withName(hostName, async () => {
      const step = <T>(name: string, p: Promise<T>): Promise<T> => {
        const t0 = performance.now();
        return p.finally(() => (timing[name] = performance.now() - t0));
      };
      await step('bridge', bridge.ensure());
      const hostMac = randomMac(randomBytes(6));
      const mac = req.mac ?? randomMac(randomBytes(6));
      const mtu = req.mtu ?? this.c.mtu();
      const pair = step('hostLink', links.createPair({ hostName, hostMac, bridge: req.bridge, mtu, hairpin: req.hairpin, netns, netnsName: req.netns, ifname: req.ifname, mac }));
      // the pod's end is configured while the allocation is being made durable: its address
      // is final once in memory (the answer still waits for the fsync)
      let podLink: Promise<void> | undefined;
      const served = current.getStore();
      if (served) {
        served.onCommit = () => {
          podLink ??= this.configureEarly(key, req, pair, step, takeEntered);
          podLink.catch(() => undefined); // awaited below; this only marks it handled
        };
      }
      const [made, alloc] = await Promise.allSettled([
        pair,
        step('allocate', this.ipamApi.allocate({ ...key, bridge: req.bridge, address: req.address, subnet: req.subnet, mac, pod: req.pod })),
      ]);
      if (served) served.onCommit = undefined;
      if (alloc.status === 'rejected') {
        await podLink?.catch(() => undefined);
        if (made.status === 'fulfilled') await links.remove(hostName);
        throw alloc.reason;
      }
      const a = alloc.value;
      try {
        if (made.status === 'rejected') throw made.reason;
        // configured early with the address the answer carries, or now
        if (!podLink || (await podLink.then(() => this.c.ipam.allocator.get(key)?.address)) !== a.address) {
          await step('podLink', links.configure({ netns, ifname: req.ifname, addresses: [a.address], gateway: a.gateway }, takeEntered()));
        }
      } catch (e) {
        // leave nothing half-made: the pair goes (its peer with it) and the address is released
        await links.remove(hostName).catch((re) => this.c.log.error({ veth: hostName, err: (re as Error).message }, 'removing the pair after a failed ADD'));
        await this.ipamApi.release(key).catch((re) => this.c.log.error({ containerId: key.containerId, err: (re as Error).message }, 'release after a failed ADD'));
        throw e;
      }
      return { ...a, mtu, hostVeth: { name: hostName, mac: hostMac }, mac };
    }).finally(() => takeEntered()?.cancel());
  }

  /**
   * Configures the pod's end with the address the allocator holds for `key` now (its commit has
   * begun), once the pair exists. The gateway is the bridge's address in the same subnet.
   */
  private async configureEarly(
    key: AttachmentKey,
    req: CniAddRequest,
    pair: Promise<void>,
    step: <T>(name: string, p: Promise<T>) => Promise<T>,
    entered: () => EnteredBatch | undefined,
  ): Promise<void> {
    const { allocator } = this.c.ipam;
    const rec = allocator.get(key);
    if (!rec) throw new Error(`no allocation in memory for ${key.containerId}/${key.ifname} at commit`);
    const { subnet } = allocator.subnetFor(req);
    const gw = allocator.inRange(subnet) ? allocator.get(gatewayKey(req.bridge, subnet))?.address : undefined;
    await pair;
    await step('podLink', this.c.links.configure({ netns: req.netnsRef ?? req.netns, ifname: req.ifname, addresses: [rec.address], gateway: gw?.split('/')[0] }, entered()));
  }

  async del(body: unknown, timing: Timing = {}): Promise<CniDelResponse> {
    const key = keyOf(parse(cniDelRequestSchema, body));
    const hostName = hostVethName(key);
    return this.c.links.withName(hostName, async () => {
      let t0 = performance.now();
      // off the wire before the address can be handed out again
      const vethExisted = await this.c.links.detach(hostName);
      timing.hostLink = performance.now() - t0;
      t0 = performance.now();
      const r = await this.ipamApi.release(key);
      timing.release = performance.now() - t0;
      return { ...r, vethExisted };
    });
  }

  async check(body: unknown, timing: Timing = {}): Promise<CniCheckResponse> {
    const req = parse(cniCheckRequestSchema, body);
    const key = keyOf(req);
    const hostName = hostVethName(key);
    const t0 = performance.now();
    const [h, p] = await Promise.all([this.c.links.inspectHost(req.bridge, hostName), this.c.links.inspectPod(req.netnsRef ?? req.netns, req.ifname)]);
    timing.inspect = performance.now() - t0;
    const rec = this.c.ipam.allocator.get(key);
    verifyAttachment(
      { containerId: key.containerId, ifname: key.ifname, netns: req.netns, bridge: req.bridge, hostName, record: rec, addresses: req.addresses, gateway: req.gateway },
      { ...h, ...p },
    );
    return {};
  }
}
