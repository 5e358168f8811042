/**
 * The host side of the pod network: the bridge, IP forwarding, and weft's iptables chains
 * (masquerade for pod egress, forwarding rules for the bridge). The bridge's own addresses are
 * bridge-addrs.ts's; the pod MTU is the data path's.
 */
import { formatCidr, type Cidr } from '../common/ip';
import type { Logger } from '../common/log';
import { Iptables, type ChainSpec } from '../sys/iptables';
import { ensureBridge, getLink, setLinkMtu, type LinkInfo } from '../sys/link';
import { ensureSysctl } from '../sys/sysctl';

export const NAT_CHAIN = 'WEFT-POSTROUTING';
export const FWD_CHAIN = 'WEFT-FORWARD';

export interface HostNetworkOptions {
  bridge: string;
  bridgeMac: string;
  /** The pod MTU (its owner is the data path). */
  mtu: () => number;
  range: Cidr;
  masquerade: boolean;
  iptables: Iptables;
  log: Logger;
}

export function chainSpecs(o: Pick<HostNetworkOptions, 'bridge' | 'range' | 'masquerade'>): ChainSpec[] {
  const r = formatCidr(o.range);
  const br = o.bridge;
  return [
    {
      table: 'filter',
      chain: FWD_CHAIN,
      from: 'FORWARD',
      rules: [
        // frames bridged between pods of one subnet (seen here when br_netfilter is on)
        `-i ${br} -o ${br} -m physdev --physdev-is-bridged -j ACCEPT`,
        // routed between subnets on the bridge: subnets are isolated from each other
        `-i ${br} -o ${br} -j DROP`,
        `-i ${br} ! -o ${br} -j ACCEPT`,
        `-o ${br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
      ],
    },
    {
      table: 'nat',
      chain: NAT_CHAIN,
      from: 'POSTROUTING',
      rules: o.masquerade ? [`-s ${r} -d ${r} -j RETURN`, `-s ${r} -d 224.0.0.0/4 -j RETURN`, `-s ${r} -j MASQUERADE`] : [],
    },
  ];
}

export class HostNetwork {
  private bridgeLink: LinkInfo | undefined;
  private ensuring: Promise<LinkInfo> | undefined;

  constructor(readonly o: HostNetworkOptions) {}

  /** Bridge, forwarding and rules: everything the pods of this host need from it. */
  async setup(): Promise<void> {
    await this.ensureBridge(true);
    await ensureSysctl('net.ipv4.ip_forward', '1');
    await this.o.iptables.apply(chainSpecs(this.o));
    this.o.log.info({ bridge: this.o.bridge, mtu: this.o.mtu(), backend: this.o.iptables.backend }, 'host network ready');
  }

  /**
   * Makes sure the bridge exists and is up; concurrent callers share one check. With
   * `recheck` false a bridge seen before is trusted, which keeps ADD to one system call.
   */
  async ensureBridge(recheck = false): Promise<LinkInfo> {
    if (this.bridgeLink && !recheck) return this.bridgeLink;
    this.ensuring ??= (async () => {
      try {
        const existed = await getLink(this.o.bridge);
        const link = await ensureBridge({ name: this.o.bridge, mtu: this.o.mtu(), mac: this.o.bridgeMac });
        if (!existed) this.o.log.info({ bridge: this.o.bridge, mac: link.address }, 'bridge created');
        this.bridgeLink = link;
        return link;
      } finally {
        this.ensuring = undefined;
      }
    })();
    return this.ensuring;
  }

  /** Forgets cached state, so the next ensureBridge looks at the system again. */
  invalidate(): void {
    this.bridgeLink = undefined;
  }

  /** The pod MTU changed (the underlay was found): new pods get it, and so does the bridge. */
  async setMtu(mtu: number): Promise<void> {
    await setLinkMtu(this.o.bridge, mtu);
  }

  /** Are weft's chains hooked into the built-in ones? Undefined when they are. */
  async verifyRules(): Promise<string | undefined> {
    const missing = await this.o.iptables.missingJumps(chainSpecs(this.o));
    return missing.length ? `iptables rules missing: ${missing.join(', ')}` : undefined;
  }

  /** Is everything in place? Used by readiness. */
  async verify(): Promise<string | undefined> {
    const link = await getLink(this.o.bridge);
    if (!link) return `bridge ${this.o.bridge} is missing`;
    if (!link.flags.includes('UP')) return `bridge ${this.o.bridge} is down`;
    return undefined;
  }
}
