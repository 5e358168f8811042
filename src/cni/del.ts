/**
 * DEL: release the address and remove the host end of the veth. Everything is computed from
 * the attachment key, never from the live interface, so an empty or vanished netns, a missing
 * interface, an unknown container and repeats all succeed.
 */
import { hostVethName } from '../common/api';
import { deleteLink } from '../sys/link';
import { keyOf, releaseAttachment, type Ctx } from './attachment';

export async function del(ctx: Ctx): Promise<void> {
  const key = keyOf(ctx);
  // the veth goes first, so the address is off the wire before it can be handed out again
  const existed = await deleteLink(hostVethName(key));
  await releaseAttachment(ctx, key);
  ctx.log.info({ ifname: key.ifname, vethExisted: existed }, 'DEL');
}
