/** STATUS (CNI 1.1): succeed when the router answers and can allocate; polled often, so one cheap request. */
import type { StatusResponse } from '../common/api';
import { NoSpaceError } from '../common/errors';
import { clientOf, type Ctx } from './attachment';

export async function status(ctx: Ctx): Promise<void> {
  const s = await clientOf(ctx.conf, 5_000).get<StatusResponse>('/v1/status');
  if (!s.ready) throw new NoSpaceError(`router not ready: ${s.reason ?? 'unknown reason'}`);
}
