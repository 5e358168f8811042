/**
 * The plugin/CLI <-> router API: HTTP + JSON on the router's unix socket (mode 0600).
 *
 * Errors come back with a non-2xx status and an `ErrorBody` (see errors.ts), whose `kind`
 * rebuilds the same error class on the caller's side.
 */
import * as z from 'zod/mini';
import { nodeCrypto } from './lazy';
import { IFNAME_RE, NAME_RE } from './netconf';

/** Identifies one attachment: the key of every allocation (network, container, interface). */
export const attachmentKeySchema = z.object({
  network: z.string().check(z.regex(NAME_RE, 'invalid network name')),
  containerId: z.string().check(z.regex(NAME_RE, 'invalid container ID')),
  ifname: z.string().check(z.regex(IFNAME_RE, 'invalid interface name')),
});
export type AttachmentKey = z.infer<typeof attachmentKeySchema>;

/** POST /v1/ipam/allocate. Idempotent: the same key gets the same answer. */
export const allocateRequestSchema = z.extend(attachmentKeySchema, {
  /** Bridge the pod joins; the router creates it if missing and gives it the gateway address. */
  bridge: z.string().check(z.regex(IFNAME_RE, 'invalid bridge name')),
  /** An exact address, `A.B.C.D` or `A.B.C.D/P`. */
  address: z.optional(z.string()),
  /** Allocate inside this subnet instead of the default one. */
  subnet: z.optional(z.string()),
  /** The container interface's MAC, recorded for `weft ps`. */
  mac: z.optional(z.string()),
  /** Pod identity from CNI_ARGS, recorded for operators. */
  pod: z.optional(z.object({ namespace: z.optional(z.string()), name: z.optional(z.string()) })),
});
export type AllocateRequest = z.infer<typeof allocateRequestSchema>;

export interface AllocateResponse {
  /** `A.B.C.D/P` */
  address: string;
  /** The bridge's address in the pod's subnet; absent for subnets outside the allocation range. */
  gateway?: string;
  mtu: number;
  bridge: { name: string; mac: string };
}

/** A stored allocation, as `lookup`, `gc` and `ps` report it. */
export interface AllocationRecord extends AttachmentKey {
  address: string;
  gateway?: string;
  mac?: string;
  bridge: string;
  pod?: { namespace?: string; name?: string };
  createdAt: string;
}

/** POST /v1/ipam/release. Releasing an unknown key succeeds with `released: false`. */
export interface ReleaseResponse {
  released: boolean;
  address?: string;
}

/** POST /v1/ipam/gc: release every allocation of `network` whose key is not listed. */
export const gcRequestSchema = z.object({
  network: z.string().check(z.regex(NAME_RE, 'invalid network name')),
  valid: z.array(z.object({ containerId: z.string(), ifname: z.string() })),
});
export type GcRequest = z.infer<typeof gcRequestSchema>;
export interface GcResponse {
  released: AllocationRecord[];
}

/** GET /v1/status: cheap, polled by the STATUS verb. */
export interface StatusResponse {
  /** True when an ADD can be served now. */
  ready: boolean;
  /** Why not, when not ready. */
  reason?: string;
  range: string;
  freeAddresses: number;
  allocations: number;
}

/** Host-side veth name of an attachment: derived, so DEL finds it without any stored state. */
export function hostVethName(key: AttachmentKey): string {
  const h = nodeCrypto().createHash('sha1').update(`${key.network}\0${key.containerId}\0${key.ifname}`).digest('hex');
  return `vethwe${h.slice(0, 9)}`;
}

export function attachmentId(key: AttachmentKey): string {
  return `${key.network}/${key.containerId}/${key.ifname}`;
}
