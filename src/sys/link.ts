/**
 * Links, addresses and routes, through iproute2's JSON output and batch mode. Callers in the
 * plugin pay one process per batch, so each operation here is one `ip` call where it can be.
 */
import { ipBatch, ipJson, type RunOptions } from './exec';
import { LINKS, shared } from './shared-reads';
import { AddressNotFoundError, ExistsError, InterfaceExistsError, LinkNotFoundError, SysError } from '../common/errors';

/** The part of `ip -json -details link show` weft reads. */
export interface LinkInfo {
  ifname: string;
  address: string;
  mtu: number;
  operstate: string;
  flags: string[];
  master?: string;
  linkinfo?: { info_kind?: string; info_slave_kind?: string; info_slave_data?: { hairpin?: boolean } };
}

export interface AddrInfo {
  ifname: string;
  addr_info: { family: string; local: string; prefixlen: number }[];
}

export interface RouteInfo {
  dst: string;
  gateway?: string;
  dev?: string;
}

/** Reads one link, or undefined when it does not exist (within a pass's shared reads, from one listing of every link). */
export async function getLink(name: string, opts: RunOptions = {}): Promise<LinkInfo | undefined> {
  const all = shared(`${LINKS}${opts.netns ?? ''}`, () => ipJson<LinkInfo[]>(['-details', 'link', 'show'], opts));
  if (all) return (await all).find((l) => l.ifname === name);
  try {
    const links = await ipJson<LinkInfo[]>(['-details', 'link', 'show', 'dev', name], opts);
    return links[0];
  } catch (e) {
    if (e instanceof LinkNotFoundError) return undefined;
    throw e;
  }
}

export interface BridgeSpec {
  name: string;
  mtu: number;
  /** A stable MAC, so the bridge's address does not change as ports come and go. */
  mac?: string;
}

/**
 * Creates the bridge if missing, brings it up and sets its MTU. Safe against a concurrent
 * creator: "exists" from the kernel is success.
 */
export async function ensureBridge(spec: BridgeSpec, opts: RunOptions = {}): Promise<LinkInfo> {
  let link = await getLink(spec.name, opts);
  if (!link) {
    try {
      await ipBatch([`link add ${spec.name} ${spec.mac ? `address ${spec.mac} ` : ''}mtu ${spec.mtu} type bridge`], opts);
    } catch (e) {
      if (!(e instanceof ExistsError)) throw e;
    }
  } else if (link.linkinfo?.info_kind !== 'bridge') {
    throw new SysError(`${spec.name} exists and is not a bridge (it is ${link.linkinfo?.info_kind ?? 'a plain device'})`);
  }
  await ipBatch([`link set ${spec.name} mtu ${spec.mtu} up`], opts);
  link = await getLink(spec.name, opts);
  if (!link) throw new SysError(`bridge ${spec.name} vanished while being set up`);
  return link;
}

/** Adds an address if it is not there yet (idempotent). */
export async function replaceAddress(dev: string, cidr: string, opts: RunOptions = {}): Promise<void> {
  await ipBatch([`addr replace ${cidr} dev ${dev}`], opts);
}

/** Removes an address; absent is success. */
export async function removeAddress(dev: string, cidr: string, opts: RunOptions = {}): Promise<void> {
  try {
    await ipBatch([`addr del ${cidr} dev ${dev}`], opts);
  } catch (e) {
    if (!(e instanceof LinkNotFoundError) && !(e instanceof AddressNotFoundError)) throw e;
  }
}

export async function listAddresses(dev: string, opts: RunOptions = {}): Promise<string[]> {
  try {
    const info = await ipJson<AddrInfo[]>(['-4', 'addr', 'show', 'dev', dev], opts);
    return (info[0]?.addr_info ?? []).map((a) => `${a.local}/${a.prefixlen}`);
  } catch (e) {
    if (e instanceof LinkNotFoundError) return [];
    throw e;
  }
}

export async function listRoutes(opts: RunOptions = {}): Promise<RouteInfo[]> {
  return ipJson<RouteInfo[]>(['-4', 'route', 'show'], opts);
}

/** Deletes a link; absent is success. Returns whether it existed. */
export async function deleteLink(name: string, opts: RunOptions = {}): Promise<boolean> {
  try {
    await ipBatch([`link del ${name}`], opts);
    return true;
  } catch (e) {
    if (e instanceof LinkNotFoundError) return false;
    throw e;
  }
}

export interface VethSpec {
  hostName: string;
  hostMac: string;
  bridge: string;
  mtu: number;
  hairpin: boolean;
  /** Path of the container's network namespace. */
  netns: string;
  ifname: string;
  mac: string;
}

/**
 * Creates the veth pair with its peer born inside the container netns under its final name,
 * so a name clash there fails the creation itself (the CNI 1.0 rule) and nothing is left
 * behind. The host end joins the bridge with hairpin as asked and comes up.
 */
export async function createVeth(v: VethSpec): Promise<void> {
  const lines = [
    `link add ${v.hostName} address ${v.hostMac} mtu ${v.mtu} type veth peer name ${v.ifname} address ${v.mac} mtu ${v.mtu} netns ${v.netns}`,
    `link set ${v.hostName} master ${v.bridge}`,
    `link set ${v.hostName} type bridge_slave hairpin ${v.hairpin ? 'on' : 'off'}`,
    `link set ${v.hostName} up`,
  ];
  try {
    await ipBatch(lines);
  } catch (e) {
    if (e instanceof ExistsError) {
      // Which name clashed? A host end left by an earlier ADD of this same attachment is ours
      // to replace; the interface name inside the netns is the caller's to fix.
      if (await deleteLink(v.hostName)) return createVeth(v);
      throw new InterfaceExistsError(`interface ${v.ifname} already exists in ${v.netns}`);
    }
    await deleteLink(v.hostName).catch(() => undefined);
    throw e;
  }
}

export interface ContainerIfaceSpec {
  netns: string;
  ifname: string;
  addresses: string[];
  gateway?: string;
}

/** Gives the container interface its addresses, brings it up and sets the default route. */
export async function configureContainerIface(c: ContainerIfaceSpec): Promise<void> {
  const lines = [
    ...c.addresses.map((a) => `addr add ${a} dev ${c.ifname}`),
    `link set ${c.ifname} up`,
    ...(c.gateway ? [`route add default via ${c.gateway} dev ${c.ifname}`] : []),
  ];
  await ipBatch(lines, { netns: c.netns });
}

/** Attaches a device to a bridge; a device that does not exist is skipped (false). */
export async function setMaster(dev: string, bridge: string): Promise<boolean> {
  try {
    await ipBatch([`link set ${dev} master ${bridge}`]);
    return true;
  } catch (e) {
    if (e instanceof LinkNotFoundError) return false;
    throw e;
  }
}


/** An interface with its IPv4 addresses, as underlay discovery reads them. */
export interface Ipv4Interface {
  ifname: string;
  mtu: number;
  flags: string[];
  /** Addresses without prefix length, primary first. */
  addrs: string[];
}

export async function listIpv4Interfaces(opts: RunOptions = {}): Promise<Ipv4Interface[]> {
  const raw = await ipJson<{ ifname: string; mtu: number; flags: string[]; addr_info: { local: string }[] }[]>(['-4', 'addr', 'show'], opts);
  return raw.map((l) => ({ ifname: l.ifname, mtu: l.mtu, flags: l.flags ?? [], addrs: (l.addr_info ?? []).map((a) => a.local) }));
}

/** The route the kernel would take to `ip`: device and source address; undefined when it has none. */
export async function routeGet(ip: string, opts: RunOptions = {}): Promise<{ dev: string; src?: string } | undefined> {
  try {
    const r = await ipJson<{ dev?: string; prefsrc?: string }[]>(['route', 'get', ip], opts);
    return r[0]?.dev ? { dev: r[0].dev, src: r[0].prefsrc } : undefined;
  } catch (e) {
    if (e instanceof SysError) return undefined; // unreachable: no route
    throw e;
  }
}

export async function setLinkMtu(dev: string, mtu: number, opts: RunOptions = {}): Promise<void> {
  await ipBatch([`link set ${dev} mtu ${mtu}`], opts);
}
