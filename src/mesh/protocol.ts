/**
 * Messages on mesh connections. Every frame is checked against these schemas; a frame that
 * does not fit closes its connection (the peer is broken or hostile), never the router.
 */
import * as z from 'zod/mini';

export const PROTOCOL = 'weft';
export const PROTOCOL_MIN = 1;
/**
 * 2: digests may have more buckets than BUCKETS (a peer of 1 reads 64 only; see Gossip.digest).
 * 3: large frames may be compressed (frame.ts).
 */
export const PROTOCOL_MAX = 3;
/** The first version whose peers read digests finer than BUCKETS. */
export const FINE_DIGESTS = 2;
/** The first version whose peers read compressed frames. */
export const COMPRESSED_FRAMES = 3;

/** First frame each side sends. */
export const helloSchema = z.object({
  t: z.literal('hello'),
  proto: z.string(),
  min: z.int(),
  max: z.int(),
  /** 48-bit peer name, MAC notation. */
  name: z.string().check(z.regex(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/)),
  nickname: z.string().check(z.maxLength(64)),
  /** Random per start of the router: tells a restart from the same peer, and self from a name clash. */
  uid: z.string().check(z.maxLength(32)),
});
export type Hello = z.infer<typeof helloSchema>;

/** State of one gossip channel: a versioned map (see crdt.ts). */
export const gossipSchema = z.object({
  t: z.literal('gossip'),
  ch: z.string().check(z.maxLength(32)),
  data: z.record(z.string(), z.looseObject({ v: z.number() })),
  /** An answer to a digest (sent to one peer). */
  a: z.optional(z.boolean()),
});

/** For each channel, per bucket of its keys, a hash of keys and versions (see gossip.ts). */
export const digestSchema = z.object({
  t: z.literal('digest'),
  d: z.array(z.object({ ch: z.string().check(z.maxLength(32)), h: z.array(z.int()).check(z.maxLength(1024)) })).check(z.maxLength(64)),
});

/** A message for one peer, forwarded hop by hop along mesh routes. */
export const unicastSchema = z.object({
  t: z.literal('msg'),
  from: z.string(),
  to: z.string(),
  type: z.string().check(z.maxLength(64)),
  ttl: z.int(),
  body: z.unknown(),
});

export const heartbeatSchema = z.object({ t: z.literal('hb') });

/** Sent after answering the peer's first digests: the peer now has what we have and it lacked. */
export const syncSchema = z.object({ t: z.literal('sync') });

/** Sent before closing on purpose, so the far end logs why. */
export const byeSchema = z.object({ t: z.literal('bye'), reason: z.string().check(z.maxLength(512)) });

export const messageSchema = z.discriminatedUnion('t', [gossipSchema, digestSchema, unicastSchema, heartbeatSchema, syncSchema, byeSchema, helloSchema]);
export type Message = z.infer<typeof messageSchema>;

export type GossipMessage = z.infer<typeof gossipSchema>;

/**
 * `gossipSchema` checked by hand: gossip is most of the traffic and its maps hold thousands of
 * entries, which a schema walk copies one by one. Accepts and refuses exactly what the schema
 * does (a property test holds the two together) and hands back the frame's own map.
 */
export function checkGossip(raw: Record<string, unknown>): GossipMessage | undefined {
  const { t, ch, data, a } = raw;
  if (t !== 'gossip' || typeof ch !== 'string' || ch.length > 32) return undefined;
  if (a !== undefined && typeof a !== 'boolean') return undefined;
  if (data === null || typeof data !== 'object' || Array.isArray(data)) return undefined;
  for (const k in data) {
    if (!Object.hasOwn(data, k)) continue;
    const e = (data as Record<string, unknown>)[k];
    if (e === null || typeof e !== 'object' || Array.isArray(e) || typeof (e as { v?: unknown }).v !== 'number' || !Number.isFinite((e as { v: number }).v)) return undefined;
  }
  const out: GossipMessage = { t, ch, data: data as GossipMessage['data'] };
  if (a !== undefined) out.a = a;
  return out;
}

/** A frame after the hello as a message, or undefined when it fits no schema. */
export function parseMessage(raw: Record<string, unknown>): Message | undefined {
  if (raw.t === 'gossip') return checkGossip(raw);
  const p = messageSchema.safeParse(raw);
  return p.success ? p.data : undefined;
}
