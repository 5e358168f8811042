/**
 * DEL: the router releases the address durably, takes the host end off the wire and deletes
 * the pair in the background. Everything follows from the attachment key, never from the live
 * interface, so an empty or vanished netns, a missing interface, an unknown container and
 * repeats all succeed. With the router down the plugin deletes the host end itself and
 * records the release for the router to apply later (src/common/spool.ts).
 */
import type { CniDelResponse } from '../common/api';
import { NotFoundError, RouterUnavailableError } from '../common/errors';
import { clientOf, keyOf, type Ctx } from './attachment';
import { delHere } from './local';

export async function del(ctx: Ctx): Promise<void> {
  const { trace } = ctx;
  const key = keyOf(ctx);
  let r: CniDelResponse;
  trace.mark('request');
  try {
    r = await clientOf(ctx.conf, 10_000).post<CniDelResponse>('/v1/cni/del', { ...key, ...(trace.on ? { trace: true } : {}) });
  } catch (e) {
    if (e instanceof NotFoundError || e instanceof RouterUnavailableError) return delHere(ctx);
    throw e;
  }
  trace.mark('answer');
  trace.router(r.timing);
  ctx.log.info({ ifname: key.ifname, vethExisted: r.vethExisted, released: r.released, address: r.address }, 'DEL');
}
