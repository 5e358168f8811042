/** ADD's result in the 1.x shape, from what the router (or the plugin itself) made. */
import type { AllocateResponse, CniAddResponse } from '../common/api';
import type { Ctx } from './attachment';
import type { CniResult } from './version';

/** What ADD learned, from the router or from doing the work itself. */
export type AddOutcome = AllocateResponse & Pick<CniAddResponse, 'hostVeth' | 'mac'>;

export function resultOf(ctx: Ctx, r: AddOutcome): CniResult {
  const { env, conf, log } = ctx;
  log.info({ ifname: env.ifname, address: r.address, hostVeth: r.hostVeth.name }, 'ADD');
  return {
    cniVersion: conf.cniVersion,
    interfaces: [
      { name: r.bridge.name, mac: r.bridge.mac },
      { name: r.hostVeth.name, mac: r.hostVeth.mac },
      { name: env.ifname, mac: r.mac, mtu: r.mtu, sandbox: env.netns },
    ],
    ips: [{ address: r.address, ...(r.gateway ? { gateway: r.gateway } : {}), interface: 2 }],
    routes: r.gateway ? [{ dst: '0.0.0.0/0', gw: r.gateway }] : [],
    dns: (conf.dns as Record<string, unknown> | undefined) ?? {},
  };
}
