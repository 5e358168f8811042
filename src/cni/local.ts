/**
 * The verbs done by the plugin itself, with its own `ip` processes: for a router older than
 * this plugin (it answers `not-found` for /v1/cni/*, as during a rolling upgrade), and for DEL
 * while the router is down. A current router does this work itself (src/router/cni-api.ts).
 */
import { nodeCrypto } from '../common/lazy';
import { hostVethName, type AllocateRequest, type AllocateResponse, type AllocationRecord } from '../common/api';
import { randomMac } from '../common/ip';
import { verifyAttachment } from '../common/pod-check';
import { configureContainerIface, createVeth, deleteLink, getLink, listAddresses, listRoutes } from '../sys/link';
import { bridgeOf, clientOf, keyOf, releaseAttachment, type Ctx } from './attachment';
import { resultOf, type AddOutcome } from './result';
import type { CniResult } from './version';

export async function addHere(ctx: Ctx, req: AllocateRequest): Promise<CniResult> {
  const { env, conf, log } = ctx;
  const mac = req.mac ?? randomMac(nodeCrypto().randomBytes(6));
  const alloc = await clientOf(conf).post<AllocateResponse>('/v1/ipam/allocate', { ...req, mac });
  const hostName = hostVethName(keyOf(ctx));
  const hostMac = randomMac(nodeCrypto().randomBytes(6));
  const mtu = conf.mtu ?? alloc.mtu;
  try {
    await createVeth({ hostName, hostMac, bridge: bridgeOf(conf), mtu, hairpin: conf.hairpinMode ?? true, netns: env.netns, ifname: env.ifname, mac });
    await configureContainerIface({ netns: env.netns, ifname: env.ifname, addresses: [alloc.address], gateway: alloc.gateway });
  } catch (e) {
    // leave nothing half-made: the pair goes (its peer with it) and the address is released
    await deleteLink(hostName).catch(() => undefined);
    await releaseAttachment(ctx, keyOf(ctx)).catch((re) => log.error({ err: (re as Error).message }, 'release after failed ADD'));
    throw e;
  }
  const out: AddOutcome = { ...alloc, mtu, mac, hostVeth: { name: hostName, mac: hostMac } };
  return resultOf(ctx, out);
}

/** Deletes the host end, then releases (or, with the router down, records the release). */
export async function delHere(ctx: Ctx): Promise<void> {
  const key = keyOf(ctx);
  // the veth goes first, so the address is off the wire before it can be handed out again
  const existed = await deleteLink(hostVethName(key));
  await releaseAttachment(ctx, key);
  ctx.log.info({ ifname: key.ifname, vethExisted: existed, here: true }, 'DEL');
}

export async function checkHere(ctx: Ctx, addresses: string[], gateway: string | undefined): Promise<void> {
  const { env, conf } = ctx;
  const key = keyOf(ctx);
  const bridge = bridgeOf(conf);
  const hostName = hostVethName(key);
  const netns = { netns: env.netns };
  const [record, br, host, cont, addrs, routes] = await Promise.all([
    clientOf(conf, 10_000).post<AllocationRecord | { found: false }>('/v1/ipam/lookup', key),
    getLink(bridge),
    getLink(hostName),
    getLink(env.ifname, netns),
    listAddresses(env.ifname, netns),
    listRoutes(netns),
  ]);
  verifyAttachment(
    { containerId: key.containerId, ifname: key.ifname, netns: env.netns, bridge, hostName, record: 'address' in record ? record : undefined, addresses, gateway },
    {
      bridge: br ? { up: br.flags.includes('UP') } : undefined,
      host: host ? { master: host.master } : undefined,
      pod: cont ? { up: cont.flags.includes('UP'), addresses: addrs, defaultVia: routes.filter((r) => r.dst === 'default') } : undefined,
    },
  );
}
