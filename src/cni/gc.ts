/**
 * GC (CNI 1.1): release every allocation of this network not in the runtime's list of valid
 * attachments, and remove their host veths if any are left.
 */
import * as z from 'zod/mini';
import { hostVethName, type GcResponse } from '../common/api';
import { zodToConfigError } from '../common/netconf';
import { deleteLink } from '../sys/link';
import { clientOf, type Ctx } from './attachment';

const attachmentsSchema = z.array(z.looseObject({ containerID: z.string(), ifname: z.string() }));

export async function gc(ctx: Ctx): Promise<void> {
  const raw = ctx.conf as Record<string, unknown>;
  // libcni sends both; the newer name wins
  const field = raw['cni.dev/valid-attachments'] !== undefined ? 'cni.dev/valid-attachments' : 'cni.dev/attachments';
  const parsed = attachmentsSchema.safeParse(raw[field] ?? []);
  if (!parsed.success) throw zodToConfigError(parsed.error, field);
  const valid = parsed.data.map((a) => ({ containerId: a.containerID, ifname: a.ifname }));
  const res = await clientOf(ctx.conf).post<GcResponse>('/v1/ipam/gc', { network: ctx.conf.name, valid });
  for (const r of res.released) await deleteLink(hostVethName(r));
  ctx.log.info({ network: ctx.conf.name, kept: valid.length, released: res.released.map((r) => r.address) }, 'GC');
}
