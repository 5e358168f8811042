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
import { formatCidr, formatIPv4, parseAddrWithPrefix, type Cidr } from '../common/ip';
import type { Logger } from '../common/log';
import type { HostNetwork } from '../datapath/host';
import { Allocator, GATEWAY_NETWORK } from '../ipam/allocator';
import type { JsonStore } from '../ipam/store';
import type { ApiServer } from './http';

function parse<T>(schema: z.ZodMiniType<T>, body: unknown): T {
  const r = schema.safeParse(body);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new BadRequestError(`${i.path.join('.') || 'body'}: ${i.message}`);
  }
  return r.data;
}

export interface IpamDeps {
  allocator: Allocator;
  store: JsonStore<unknown>;
  host: HostNetwork;
  mtu: () => number;
  log: Logger;
}

export function gatewayKey(bridge: string, subnet: Cidr): AttachmentKey {
  return { network: GATEWAY_NETWORK, containerId: `${bridge}-${formatIPv4(subnet.base)}-${subnet.prefix}`, ifname: bridge };
}

export class IpamApi {
  constructor(private readonly d: IpamDeps) {}

  register(api: ApiServer): void {
    api
      .on('POST', '/v1/ipam/allocate', (b) => this.allocate(b))
      .on('POST', '/v1/ipam/release', (b) => this.release(b))
      .on('POST', '/v1/ipam/lookup', (b) => this.lookup(b))
      .on('POST', '/v1/ipam/gc', (b) => this.gc(b))
      .on('GET', '/v1/status', () => this.status());
  }

  /** Commits the change or undoes it in memory, so memory never claims what disk does not. */
  private async commit(undo: () => void): Promise<void> {
    try {
      await this.d.store.commit();
    } catch (e) {
      undo();
      throw e;
    }
  }

  async allocate(body: unknown): Promise<AllocateResponse> {
    const req = parse(allocateRequestSchema, body);
    const { allocator, host } = this.d;
    if (req.bridge !== host.o.bridge) {
      throw new ConfigError('bridge', `"${req.bridge}": this router serves bridge "${host.o.bridge}"`);
    }
    const { subnet, exact } = allocator.subnetFor(req);
    const bridgeLink = await host.ensureBridge();
    const before = allocator.get(req);
    const created: AttachmentKey[] = [];
    let gateway: string | undefined;
    const takeGateway = () => {
      const gk = gatewayKey(req.bridge, subnet);
      if (!allocator.get(gk)) created.push(gk);
      gateway = allocator.allocate(gk, subnet, undefined, { bridge: req.bridge }).address;
    };
    // an automatic pod address comes after the gateway's, so the gateway is the subnet's first
    if (allocator.inRange(subnet) && exact === undefined) takeGateway();
    const rec = allocator.allocate(req, subnet, exact, { bridge: req.bridge, mac: req.mac, pod: req.pod });
    if (!before) created.push(req);
    try {
      if (allocator.inRange(subnet) && exact !== undefined) takeGateway();
    } catch (e) {
      for (const k of created) allocator.release(k);
      throw e;
    }
    await this.commit(() => created.forEach((k) => allocator.release(k)));
    if (gateway) await host.ensureGateway(gateway);
    this.d.log.info({ containerId: req.containerId, ifname: req.ifname, network: req.network, address: rec.address }, 'allocated');
    return {
      address: rec.address,
      gateway: gateway ? formatIPv4(parseAddrWithPrefix(gateway)!.addr) : undefined,
      mtu: this.d.mtu(),
      bridge: { name: req.bridge, mac: bridgeLink.address },
    };
  }

  async release(body: unknown): Promise<ReleaseResponse> {
    const key = parse(attachmentKeySchema, body);
    const rec = this.d.allocator.release(key);
    if (!rec) return { released: false };
    await this.commit(() => this.d.allocator.restore(rec));
    this.d.log.info({ containerId: key.containerId, ifname: key.ifname, network: key.network, address: rec.address }, 'released');
    return { released: true, address: rec.address };
  }

  lookup(body: unknown): AllocationRecord | { found: false } {
    const key = parse(attachmentKeySchema, body);
    return this.d.allocator.get(key) ?? { found: false };
  }

  async gc(body: unknown): Promise<GcResponse> {
    const req = parse(gcRequestSchema, body);
    if (req.network === GATEWAY_NETWORK) throw new BadRequestError(`network name ${GATEWAY_NETWORK} is reserved`);
    const released = this.d.allocator.gc(req.network, req.valid);
    if (released.length) {
      await this.commit(() => released.forEach((r) => this.d.allocator.restore(r)));
      this.d.log.info({ network: req.network, released: released.map((r) => r.address) }, 'gc released');
    }
    return { released };
  }

  status(): StatusResponse {
    const { allocator } = this.d;
    const free = allocator.freeCount();
    return {
      ready: free > 0,
      reason: free > 0 ? undefined : `no free address in ${formatCidr(allocator.defaultSubnet)}`,
      range: formatCidr(allocator.range),
      freeAddresses: free,
      allocations: allocator.list().filter((r) => r.network !== GATEWAY_NETWORK).length,
    };
  }
}
