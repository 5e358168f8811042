/**
 * ADD: one request; the router allocates, makes the veth pair and configures the pod's end
 * (src/router/cni-api.ts). The plugin validates, asks, and prints the result in 1.x shape.
 */
import type { CniAddResponse } from '../common/api';
import { NotFoundError } from '../common/errors';
import { allocateRequest, clientOf, requireNetns, type Ctx } from './attachment';
import { addHere } from './local';
import { resultOf } from './result';
import type { CniResult } from './version';

export async function add(ctx: Ctx): Promise<CniResult> {
  const { env, conf, trace } = ctx;
  const req = allocateRequest(ctx);
  requireNetns(env);
  let r: CniAddResponse;
  trace.mark('request');
  try {
    r = await clientOf(conf).post<CniAddResponse>('/v1/cni/add', {
      ...req,
      netns: env.netns,
      mtu: conf.mtu,
      hairpin: conf.hairpinMode ?? true,
      ...(trace.on ? { trace: true } : {}),
    });
  } catch (e) {
    if (e instanceof NotFoundError) return addHere(ctx, req);
    throw e;
  }
  trace.mark('answer');
  trace.router(r.timing);
  return resultOf(ctx, r);
}
