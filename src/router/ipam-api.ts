/**
 * The IPAM endpoints of the router API: allocate, release, lookup, gc, status. Every change is
 * committed to disk before it is answered.
 */
import * as z from 'zod/mini';
import {
  allocateRequestSchema,
  attachmentKeySchema,
  gcRequestSchema,
  type AllocateResponse,
  type AllocationRecord,
  type AttachmentKey,
  type GcResponse,
  type ReleaseResponse,
  type StatusResponse,
} from '../common/api';
import { BadRequestError, ConfigError } from '../common/errors';
import { zodToConfigError } from '../common/netconf';
import { formatCidr, type Cidr } from '../common/ip';
import type { Logger } from '../common/log';
import { addressOf, gatewayKey } from '../datapath/bridge-addrs';
import { GATEWAY_NETWORK } from '../ipam/allocator';
import type { IpamService } from '../ipam/service';
import type { LinkInfo } from '../sys/link';
import type { ApiServer } from './http';

function parse<T>(schema: z.ZodMiniType<T>, body: unknown): T {
  const r = schema.safeParse(body);
  if (!r.success) throw new BadRequestError(zodToConfigError(r.error).message);
  return r.data;
}

export interface IpamApiComponents {
  ipam: Pick<IpamService, 'allocator' | 'allocate' | 'status'>;
  /** Persists the IPAM state; resolves once it is on disk. */
  commit(): Promise<void>;
  /** The bridge this router serves, created on demand. */
  bridge: { name: string; ensure(): Promise<LinkInfo> };
  /** The bridge's own addresses. */
  gateways: { gatewayFor(subnet: Cidr): Promise<AllocationRecord>; ensure(cidr: string): Promise<void> };
  /** The pod MTU (the data path's). */
  mtu: () => number;
  log: Logger;
  /** Counts requests by verb and result (for metrics). */
  observe?: (op: string, result: 'ok' | 'error', seconds: number) => void;
}

export class IpamApi {
  constructor(private readonly d: IpamApiComponents) {}

  register(api: ApiServer): void {
    const timed =
      (op: string, h: (b: unknown) => unknown) =>
      async (b: unknown) => {
        const t0 = process.hrtime.bigint();
        try {
          const r = await h(b);
          this.d.observe?.(op, 'ok', Number(process.hrtime.bigint() - t0) / 1e9);
          return r;
        } catch (e) {
          this.d.observe?.(op, 'error', Number(process.hrtime.bigint() - t0) / 1e9);
          throw e;
        }
      };
    api
      .on('POST', '/v1/ipam/allocate', timed('allocate', (b) => this.allocate(b)))
      .on('POST', '/v1/ipam/release', timed('release', (b) => this.release(b)))
      .on('POST', '/v1/ipam/lookup', timed('lookup', (b) => this.lookup(b)))
      .on('POST', '/v1/ipam/gc', timed('gc', (b) => this.gc(b)))
      .on('GET', '/v1/status', timed('status', () => this.status()));
  }

  private get allocator() {
    return this.d.ipam.allocator;
  }

  /** Commits the change or undoes it in memory, so memory never claims what disk does not. */
  private async commit(undo: () => void): Promise<void> {
    try {
      await this.d.commit();
    } catch (e) {
      undo();
      throw e;
    }
  }

  async allocate(body: unknown): Promise<AllocateResponse> {
    const req = parse(allocateRequestSchema, body);
    const { allocator } = this;
    const { bridge, gateways } = this.d;
    if (req.bridge !== bridge.name) {
      throw new ConfigError('bridge', `"${req.bridge}": this router serves bridge "${bridge.name}"`);
    }
    const { subnet, exact } = allocator.subnetFor(req);
    const bridgeLink = await bridge.ensure();
    const inRange = allocator.inRange(subnet);
    const created: AttachmentKey[] = [];
    const note = (k: AttachmentKey) => {
      if (!allocator.get(k)) created.push(k);
    };
    let gateway: string | undefined;
    let rec: AllocationRecord;
    try {
      // an automatic pod address comes after the gateway's, so the gateway is the subnet's first
      if (inRange && exact === undefined) {
        note(gatewayKey(req.bridge, subnet));
        gateway = (await gateways.gatewayFor(subnet)).address;
      }
      note(req);
      rec = await this.d.ipam.allocate(req, subnet, exact, { bridge: req.bridge, mac: req.mac, pod: req.pod });
      if (inRange && exact !== undefined) {
        note(gatewayKey(req.bridge, subnet));
        gateway = (await gateways.gatewayFor(subnet)).address;
      }
      // the pod's gateway, as `weft report` lists it
      if (gateway) rec.gateway = addressOf(gateway);
    } catch (e) {
      for (const k of created) allocator.release(k);
      throw e;
    }
    await this.commit(() => created.forEach((k) => allocator.release(k)));
    if (gateway) await gateways.ensure(gateway);
    this.d.log.info({ containerId: req.containerId, ifname: req.ifname, network: req.network, address: rec.address }, 'allocated');
    return {
      address: rec.address,
      gateway: gateway ? addressOf(gateway) : undefined,
      mtu: this.d.mtu(),
      bridge: { name: req.bridge, mac: bridgeLink.address },
    };
  }

  async release(body: unknown): Promise<ReleaseResponse> {
    const key = parse(attachmentKeySchema, body);
    const rec = this.allocator.release(key);
    if (!rec) return { released: false };
    await this.commit(() => this.allocator.restore(rec));
    this.d.log.info({ containerId: key.containerId, ifname: key.ifname, network: key.network, address: rec.address }, 'released');
    return { released: true, address: rec.address };
  }

  lookup(body: unknown): AllocationRecord | { found: false } {
    const key = parse(attachmentKeySchema, body);
    return this.allocator.get(key) ?? { found: false };
  }

  async gc(body: unknown): Promise<GcResponse> {
    const req = parse(gcRequestSchema, body);
    const released = this.allocator.gc(req.network, req.valid);
    if (released.length) {
      await this.commit(() => released.forEach((r) => this.allocator.restore(r)));
      this.d.log.info({ network: req.network, released: released.map((r) => r.address) }, 'gc released');
    }
    return { released };
  }

  status(): StatusResponse {
    const { allocator } = this;
    const free = allocator.freeCount();
    const st = this.d.ipam.status();
    const ready = st.status === 'ready';
    return {
      ready,
      reason: ready ? undefined : `${st.status}${st.reason ? `: ${st.reason}` : ''}`,
      range: formatCidr(allocator.range),
      freeAddresses: free,
      allocations: allocator.list().filter((r) => r.network !== GATEWAY_NETWORK).length,
    };
  }
}
