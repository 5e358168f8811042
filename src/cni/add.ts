/** ADD: address from the router, veth into the bridge and the container, result in 1.x shape. */
import { nodeCrypto } from '../common/lazy';
import { hostVethName, type AllocateResponse } from '../common/api';
import { randomMac } from '../common/ip';
import { configureContainerIface, createVeth, deleteLink } from '../sys/link';
import { allocateRequest, bridgeOf, requireNetns, clientOf, keyOf, releaseAttachment, type Ctx } from './attachment';
import type { CniResult } from './version';

export async function add(ctx: Ctx): Promise<CniResult> {
  const { env, conf, log } = ctx;
  const req = allocateRequest(ctx);
  requireNetns(env);
  const alloc = await clientOf(conf).post<AllocateResponse>('/v1/ipam/allocate', req);
  const hostName = hostVethName(keyOf(ctx));
  const hostMac = randomMac(nodeCrypto().randomBytes(6));
  const mtu = conf.mtu ?? alloc.mtu;
  try {
    await createVeth({
      hostName,
      hostMac,
      bridge: bridgeOf(conf),
      mtu,
      hairpin: conf.hairpinMode ?? true,
      netns: env.netns,
      ifname: env.ifname,
      mac: req.mac,
    });
    await configureContainerIface({ netns: env.netns, ifname: env.ifname, addresses: [alloc.address], gateway: alloc.gateway });
  } catch (e) {
    // leave nothing half-made: the pair goes (its peer with it) and the address is released
    await deleteLink(hostName).catch(() => undefined);
    await releaseAttachment(ctx, keyOf(ctx)).catch((re) => log.error({ err: (re as Error).message }, 'release after failed ADD'));
    throw e;
  }
  log.info({ ifname: env.ifname, address: alloc.address, hostVeth: hostName }, 'ADD');
  return {
    cniVersion: conf.cniVersion,
    interfaces: [
      { name: alloc.bridge.name, mac: alloc.bridge.mac },
      { name: hostName, mac: hostMac },
      { name: env.ifname, mac: req.mac, mtu, sandbox: env.netns },
    ],
    ips: [{ address: alloc.address, ...(alloc.gateway ? { gateway: alloc.gateway } : {}), interface: 2 }],
    routes: alloc.gateway ? [{ dst: '0.0.0.0/0', gw: alloc.gateway }] : [],
    dns: (conf.dns as Record<string, unknown> | undefined) ?? {},
  };
}
