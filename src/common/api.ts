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

/**
 * POST /v1/cni/add: the whole of a CNI ADD in the router. It allocates (durably), creates the
 * veth pair with its peer born in `netns` as `ifname`, joins the host end to the bridge and
 * configures the pod's end (address, up, default route); it answers once all of that is done,
 * and leaves nothing behind when it fails.
 */
export const cniAddRequestSchema = z.extend(allocateRequestSchema, {
  /** The pod's network namespace: /var/run/netns/NAME or /proc/PID/ns/net, as the runtime gave it. */
  netns: z.string().check(z.regex(/^\/[^\n\0]*$/, 'must be an absolute path')),
  /** A path to the same namespace that the router can open: /proc/PID/fd/N of the plugin's descriptor; `netns` when absent. */
  netnsRef: z.optional(z.string().check(z.regex(/^\/[^\n\0]*$/, 'must be an absolute path'))),
  /** Pod MTU; the router's own (underlay less the encapsulation) when absent. */
  mtu: z.optional(z.int().check(z.minimum(68), z.maximum(65535))),
  /** Hairpin on the host end. */
  hairpin: z.boolean(),
  /** Answer with the time each step took (`timing`). */
  trace: z.optional(z.boolean()),
});
export type CniAddRequest = z.infer<typeof cniAddRequestSchema>;

export interface CniAddResponse extends AllocateResponse {
  /** The host end of the pair. */
  hostVeth: { name: string; mac: string };
  /** The pod's interface MAC (the one asked for, or a random one). */
  mac: string;
  timing?: Timing;
}

/**
 * POST /v1/cni/del: releases the address durably and takes the host end off the wire (down);
 * the router deletes the pair in the background and makes an ADD of the same key wait for that.
 * Succeeds for keys it never saw and for repeats.
 */
export const cniDelRequestSchema = z.extend(attachmentKeySchema, { trace: z.optional(z.boolean()) });
export interface CniDelResponse extends ReleaseResponse {
  /** Whether the host end was still there. */
  vethExisted: boolean;
  timing?: Timing;
}

/**
 * POST /v1/cni/check: compares the attachment the router recorded (and the addresses of the
 * runtime's prevResult) with the kernel's state: bridge up, host end on it, the pod's interface
 * up with its address and default route. Answers `{}`, or a `check-failed` error saying what differs.
 */
export const cniCheckRequestSchema = z.extend(attachmentKeySchema, {
  netns: z.string().check(z.regex(/^\/[^\n\0]*$/, 'must be an absolute path')),
  /** As in the ADD request. */
  netnsRef: z.optional(z.string().check(z.regex(/^\/[^\n\0]*$/, 'must be an absolute path'))),
  bridge: z.string().check(z.regex(IFNAME_RE, 'invalid bridge name')),
  /** Addresses prevResult gives the interface (A.B.C.D/P). */
  addresses: z.array(z.string()),
  /** The gateway prevResult gives them: CHECK then wants the default route through it. */
  gateway: z.optional(z.string()),
  trace: z.optional(z.boolean()),
});
export type CniCheckRequest = z.infer<typeof cniCheckRequestSchema>;
export interface CniCheckResponse {
  timing?: Timing;
}

/** Milliseconds each step of a request took in the router (only when asked with `trace`). */
export type Timing = Record<string, number>;

/** Host-side veth name of an attachment: derived, so DEL finds it without any stored state. */
export function hostVethName(key: AttachmentKey): string {
  const h = nodeCrypto().createHash('sha1').update(`${key.network}\0${key.containerId}\0${key.ifname}`).digest('hex');
  return `vethwe${h.slice(0, 9)}`;
}

export function attachmentId(key: AttachmentKey): string {
  return `${key.network}/${key.containerId}/${key.ifname}`;
}
