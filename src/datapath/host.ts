/**
 * The host side of the pod network: the bridge with its gateway addresses, IP forwarding, and
 * weft's iptables chains (masquerade for pod egress, forwarding rules for the bridge).
 */
import { formatCidr, type Cidr } from '../common/ip';
import { ConfigError } from '../common/errors';
import type { Logger } from '../common/log';
import { Iptables, type ChainSpec } from '../sys/iptables';
import { ensureBridge, getLink, listRoutes, replaceAddress, type LinkInfo } from '../sys/link';
import { ensureSysctl } from '../sys/sysctl';
import { ipJson } from '../sys/exec';

/** VXLAN over IPv4: outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8. */
export const VXLAN_OVERHEAD = 50;

export const NAT_CHAIN = 'WEFT-POSTROUTING';
export const FWD_CHAIN = 'WEFT-FORWARD';

export interface HostNetworkOptions {
  bridge: string;
  bridgeMac: string;
  mtu: number;
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

/**
 * Finds the underlay (the interface holding --advertise-addr, else the one of the default
 * route) and derives the pod MTU from it: its MTU less the encapsulation overhead.
 */
export async function derivePodMtu(
  advertiseAddr: string | undefined,
  overhead = VXLAN_OVERHEAD,
): Promise<{ mtu: number; underlay?: string; underlayIp?: string }> {
  const addrs = await ipJson<{ ifname: string; addr_info: { local: string }[] }[]>(['-4', 'addr', 'show']);
  let dev: string | undefined;
  if (advertiseAddr) {
    dev = addrs.find((l) => l.addr_info.some((a) => a.local === advertiseAddr))?.ifname;
    if (!dev) throw new ConfigError('--advertise-addr', `${advertiseAddr} is not an address of this host`);
  }
  dev ??= (await listRoutes()).find((r) => r.dst === 'default')?.dev;
  const link = dev ? await getLink(dev) : undefined;
  const underlayIp = advertiseAddr ?? addrs.find((l) => l.ifname === dev)?.addr_info[0]?.local;
  return { mtu: (link?.mtu ?? 1500) - overhead, underlay: link?.ifname, underlayIp };
}

export class HostNetwork {
  private bridgeLink: LinkInfo | undefined;
  private ensuring: Promise<LinkInfo> | undefined;
  private readonly gateways = new Set<string>();

  constructor(readonly o: HostNetworkOptions) {}

  /** Bridge, forwarding and rules: everything the pods of this host need from it. */
  async setup(): Promise<void> {
    await this.ensureBridge(true);
    await ensureSysctl('net.ipv4.ip_forward', '1');
    await this.o.iptables.apply(chainSpecs(this.o));
    this.o.log.info({ bridge: this.o.bridge, mtu: this.o.mtu, backend: this.o.iptables.backend }, 'host network ready');
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
        const link = await ensureBridge({ name: this.o.bridge, mtu: this.o.mtu, mac: this.o.bridgeMac });
        if (!existed) {
          this.o.log.info({ bridge: this.o.bridge, mac: link.address }, 'bridge created');
          this.gateways.clear();
        }
        this.bridgeLink = link;
        return link;
      } finally {
        this.ensuring = undefined;
      }
    })();
    return this.ensuring;
  }

  /** Gives the bridge an address (idempotent; remembered so repeats cost nothing). */
  async ensureGateway(cidrWithAddr: string): Promise<void> {
    if (this.gateways.has(cidrWithAddr)) return;
    await replaceAddress(this.o.bridge, cidrWithAddr);
    this.gateways.add(cidrWithAddr);
  }

  /** Forgets cached state, so the next ensure* calls look at the system again. */
  invalidate(): void {
    this.bridgeLink = undefined;
    this.gateways.clear();
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
