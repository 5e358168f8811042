/**
 * CHECK: verify what ADD made (bridge, veth and its master, container interface, address,
 * default route) and that the router still holds the allocation. Extra addresses or routes
 * that later plugins in a chain added are tolerated.
 */
import * as z from 'zod/mini';
import { hostVethName, type AllocationRecord } from '../common/api';
import { CheckFailedError, ConfigError } from '../common/errors';
import { zodToConfigError } from '../common/netconf';
import { getLink, listAddresses, listRoutes } from '../sys/link';
import { bridgeOf, clientOf, keyOf, requireNetns, type Ctx } from './attachment';

const prevResultSchema = z.looseObject({
  interfaces: z.optional(z.array(z.looseObject({ name: z.string(), sandbox: z.optional(z.string()) }))),
  ips: z.optional(z.array(z.looseObject({ address: z.string(), gateway: z.optional(z.string()), interface: z.optional(z.number()) }))),
});

export async function check(ctx: Ctx): Promise<void> {
  const { env, conf } = ctx;
  if (conf.prevResult === undefined) throw new ConfigError('prevResult', 'is required for CHECK');
  const pr = prevResultSchema.safeParse(conf.prevResult);
  if (!pr.success) throw zodToConfigError(pr.error, 'prevResult');
  requireNetns(env);
  const ifaces = pr.data.interfaces ?? [];
  const idx = ifaces.findIndex((i) => i.name === env.ifname && i.sandbox !== undefined);
  if (idx < 0) throw new CheckFailedError(`prevResult has no interface ${env.ifname} in a sandbox`);
  const ips = (pr.data.ips ?? []).filter((ip) => ip.interface === idx);

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
  const fail = (m: string) => {
    throw new CheckFailedError(m);
  };
  if (!('address' in record)) fail(`the router holds no address for ${key.containerId}/${key.ifname}`);
  const rec = record as AllocationRecord;
  if (!br) fail(`bridge ${bridge} is missing`);
  else if (!br.flags.includes('UP')) fail(`bridge ${bridge} is down`);
  if (!host) fail(`host veth ${hostName} is missing`);
  else if (host.master !== bridge) fail(`host veth ${hostName} is not attached to ${bridge} (master: ${host.master ?? 'none'})`);
  if (!cont) fail(`interface ${env.ifname} is missing in ${env.netns}`);
  else if (!cont.flags.includes('UP')) fail(`interface ${env.ifname} is down in ${env.netns}`);
  for (const ip of ips) {
    if (!addrs.includes(ip.address)) fail(`address ${ip.address} is missing on ${env.ifname}`);
  }
  if (!addrs.includes(rec.address)) fail(`address ${rec.address} held by the router is missing on ${env.ifname}`);
  if (rec.gateway) {
    const hasDefault = routes.some((r) => r.dst === 'default' && r.gateway === rec.gateway && r.dev === env.ifname);
    if (!hasDefault) fail(`default route via ${rec.gateway} on ${env.ifname} is missing`);
  }
}
