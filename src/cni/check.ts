/**
 * CHECK: the router compares what ADD made with the kernel (bridge up, host end on it, the
 * pod's interface up with its addresses and default route); prevResult's addresses for the
 * interface are checked too. Extra addresses or routes that later plugins in a chain added
 * are tolerated.
 */
import * as z from 'zod/mini';
import type { CniCheckRequest, CniCheckResponse } from '../common/api';
import { CheckFailedError, ConfigError, NetnsNotFoundError, NotFoundError } from '../common/errors';
import { zodToConfigError } from '../common/netconf';
import { bridgeOf, clientOf, keyOf, openNetns, type Ctx } from './attachment';
import { checkHere } from './local';

const prevResultSchema = z.looseObject({
  interfaces: z.optional(z.array(z.looseObject({ name: z.string(), sandbox: z.optional(z.string()) }))),
  ips: z.optional(z.array(z.looseObject({ address: z.string(), gateway: z.optional(z.string()), interface: z.optional(z.number()) }))),
});

type PrevResult = z.infer<typeof prevResultSchema>;

/** The config's prevResult, required and checked (code 7 naming the field otherwise). */
export function prevResultOf(ctx: Ctx): PrevResult {
  if (ctx.conf.prevResult === undefined) throw new ConfigError('prevResult', 'is required for CHECK');
  const pr = prevResultSchema.safeParse(ctx.conf.prevResult);
  if (!pr.success) throw zodToConfigError(pr.error, 'prevResult');
  return pr.data;
}

/** The request CHECK sends, from the config and its prevResult (no I/O). */
export function checkRequest(ctx: Ctx, pr: PrevResult = prevResultOf(ctx)): CniCheckRequest {
  const { env, conf, trace } = ctx;
  const ifaces = pr.interfaces ?? [];
  const idx = ifaces.findIndex((i) => i.name === env.ifname && i.sandbox !== undefined);
  if (idx < 0) throw new CheckFailedError(`prevResult has no interface ${env.ifname} in a sandbox`);
  const ips = (pr.ips ?? []).filter((ip) => ip.interface === idx);
  return {
    ...keyOf(ctx),
    netns: env.netns,
    bridge: bridgeOf(conf),
    addresses: ips.map((ip) => ip.address),
    gateway: ips.find((ip) => ip.gateway)?.gateway,
    ...(trace.on ? { trace: true } : {}),
  };
}

export async function check(ctx: Ctx): Promise<void> {
  const { env, conf, trace } = ctx;
  const pr = prevResultOf(ctx);
  // a namespace that is not there is the runtime's mistake (code 4), whatever prevResult says
  const netnsRef = openNetns(env);
  const req = checkRequest(ctx, pr);
  trace.mark('request');
  let r: CniCheckResponse;
  try {
    r = await clientOf(conf, 10_000).post<CniCheckResponse>('/v1/cni/check', { ...req, netnsRef });
  } catch (e) {
    if (e instanceof NotFoundError || e instanceof NetnsNotFoundError) return checkHere(ctx, req.addresses, req.gateway);
    throw e;
  }
  trace.mark('answer');
  trace.router(r.timing);
}
