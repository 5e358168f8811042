/**
 * The bridge's own addresses: the pods' gateway in each subnet of the range (allocated from
 * IPAM, so no other host hands it out), the addresses an operator exposed, and putting them and
 * every pod's veth back on a bridge that was deleted and created again.
 */
import { hostVethName, type AllocationRecord, type AttachmentKey } from '../common/api';
import { BadRequestError } from '../common/errors';
import { formatIPv4, parseAddrWithPrefix, type Cidr } from '../common/ip';
import type { Startable } from '../common/lifecycle';
import type { Logger } from '../common/log';
import { GATEWAY_NETWORK } from '../ipam/allocator';
import { listAddresses, removeAddress, replaceAddress, setMaster } from '../sys/link';

/** The allocation key of the bridge's address in a subnet. */
export function gatewayKey(bridge: string, subnet: Cidr): AttachmentKey {
  return { network: GATEWAY_NETWORK, containerId: `${bridge}-${formatIPv4(subnet.base)}-${subnet.prefix}`, ifname: bridge };
}

/** The address part of `A.B.C.D/P`. */
export const addressOf = (cidr: string): string => formatIPv4(parseAddrWithPrefix(cidr)?.addr ?? 0);

export interface BridgeAddressComponents {
  bridge: string;
  ipam: {
    allocate(key: AttachmentKey, subnet: Cidr, exact: undefined, extra: { bridge: string }): Promise<AllocationRecord>;
    list(): AllocationRecord[];
    defaultSubnet: Cidr;
  };
  /** Persists the IPAM state (the gateway's allocation). */
  commit(): Promise<void>;
  /** The exposed addresses, persisted (expose.json). */
  exposed: { list(): string[]; save(list: string[]): Promise<void> };
  /** Called once this host has its address on the pod network. */
  onGateway(address: string): void;
  log: Logger;
}

export class BridgeAddresses implements Startable {
  /** The bridge's address in the default subnet (A.B.C.D/P), once claimed. */
  gateway: string | undefined;
  private readonly onBridge = new Set<string>();
  private stopped = false;

  constructor(private readonly c: BridgeAddressComponents) {}

  /** Claims the default subnet's gateway in the background, as soon as this host has space. */
  async start(): Promise<void> {
    void this.claim();
  }

  async stop(): Promise<void> {
    this.stopped = true;
  }

  private async claim(): Promise<void> {
    while (!this.stopped) {
      try {
        const rec = await this.gatewayFor(this.c.ipam.defaultSubnet);
        await this.c.commit();
        await this.ensure(rec.address);
        this.gateway = rec.address;
        this.c.onGateway(addressOf(rec.address));
        this.c.log.info({ address: rec.address }, 'bridge has its address on the pod network');
        return;
      } catch (e) {
        this.c.log.debug({ err: (e as Error).message }, 'no gateway address yet; retrying');
        await new Promise((r) => setTimeout(r, 1000).unref());
      }
    }
  }

  /** The bridge's address in a subnet of the range (allocated once, then the same). */
  gatewayFor(subnet: Cidr): Promise<AllocationRecord> {
    return this.c.ipam.allocate(gatewayKey(this.c.bridge, subnet), subnet, undefined, { bridge: this.c.bridge });
  }

  /** Puts an address on the bridge (remembered, so repeats cost nothing). */
  async ensure(cidr: string): Promise<void> {
    if (this.onBridge.has(cidr)) return;
    await replaceAddress(this.c.bridge, cidr);
    this.onBridge.add(cidr);
  }

  /** Is this address one of the pods' gateways on this host? */
  isGateway(cidr: string): boolean {
    return this.c.ipam.list().some((r) => r.network === GATEWAY_NETWORK && r.address === cidr);
  }

  /**
   * Puts on the bridge what belongs there: its gateway and exposed addresses, and the host end
   * of every pod's veth (a bridge deleted and created again has lost them all).
   */
  async restore(): Promise<void> {
    this.onBridge.clear();
    for (const rec of this.c.ipam.list()) {
      if (rec.network === GATEWAY_NETWORK) await this.ensure(rec.address);
      else await setMaster(hostVethName(rec), this.c.bridge);
    }
    for (const e of this.c.exposed.list()) await this.ensure(e);
  }

  /** `weft expose`: with no addresses, the gateway; else puts each on the bridge and remembers it. */
  async expose(cidrs: readonly string[], ipamStatus: () => string): Promise<string[]> {
    if (cidrs.length === 0) {
      if (!this.gateway) throw new BadRequestError(`no address on the pod network yet (IPAM: ${ipamStatus()})`);
      return [this.gateway];
    }
    for (const c of cidrs) {
      if (!parseAddrWithPrefix(c) || c.indexOf('/') < 0) throw new BadRequestError(`"${c}" is not ADDRESS/PREFIX (e.g. 10.0.0.100/24)`);
    }
    const list = this.c.exposed.list();
    for (const c of cidrs) {
      await replaceAddress(this.c.bridge, c);
      this.onBridge.add(c);
      if (!list.includes(c)) list.push(c);
    }
    await this.c.exposed.save(list);
    return [...cidrs];
  }

  /** `weft hide`: takes exposed addresses off the bridge (all of them when none are named); never a gateway. */
  async hide(asked: readonly string[]): Promise<string[]> {
    const exposed = this.c.exposed.list();
    const cidrs = asked.length ? [...asked] : [...exposed];
    for (const c of cidrs) {
      if (this.isGateway(c)) throw new BadRequestError(`${c} is the pods' gateway on this host; it stays while the router runs`);
      if (!exposed.includes(c) && !(await listAddresses(this.c.bridge)).includes(c)) throw new BadRequestError(`${c} is not exposed`);
    }
    for (const c of cidrs) {
      await removeAddress(this.c.bridge, c);
      this.onBridge.delete(c);
    }
    await this.c.exposed.save(exposed.filter((c) => !cidrs.includes(c)));
    return cidrs;
  }
}
