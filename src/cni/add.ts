/**
 * ADD: one request; the router allocates, makes the veth pair and configures the pod's end
 * (src/router/cni-api.ts). The plugin validates, asks, and prints the result in 1.x shape.
 */
import type { CniAddRequest, CniAddResponse } from '../common/api';
import { NetnsNotFoundError, NotFoundError } from '../common/errors';
import { allocateRequest, clientOf, openNetns, type Ctx } from './attachment';
import { addHere } from './local';
import { resultOf } from './result';
import type { CniResult } from './version';

/** The request ADD sends, validated (no I/O). */
export function addRequest(ctx: Ctx): CniAddRequest {
  const { env, conf, trace } = ctx;
  return {
    ...allocateRequest(ctx),
    netns: env.netns,
    mtu: conf.mtu,
    hairpin: conf.hairpinMode ?? true,
    ...(trace.on ? { trace: true } : {}),
  };
}

export async function add(ctx: Ctx): Promise<CniResult> {
  const { env, conf, trace } = ctx;
  const req = addRequest(ctx);
  const netnsRef = openNetns(env);
  let r: CniAddResponse;
  trace.mark('request');
  try {
    r = await clientOf(conf).post<CniAddResponse>('/v1/cni/add', { ...req, netnsRef });
  } catch (e) {
    // an older router; or one that cannot see this process's descriptors (no shared pid namespace)
    if (e instanceof NotFoundError || e instanceof NetnsNotFoundError) return addHere(ctx, req);
    throw e;
  }
  trace.mark('answer');
  trace.router(r.timing);
  return resultOf(ctx, r);
}
