/**
 * The sleeve's datagram, router to router over UDP, one per hop. Contract between routers:
 *
 * ```
 * header (20 bytes, in clear; the AAD when sealed)
 *   0  1  version, 0xA1
 *   1  1  flags: bit 0 = sealed
 *   2  6  sender: the hop that sent this datagram (48-bit peer name)
 *   8  4  key id of the sender's data key (0 when plain)
 *  12  8  counter, the AEAD nonce (0 when plain)
 * payload (sealed with AES-256-GCM, tag appended, or plain)
 *   0  1  kind: 0 frame, 1 probe request, 2 probe reply
 *   1  1  hops left (a relay decrements it; 0 is dropped)
 *   2  6  origin: the router whose pod sent the frame (or the prober)
 *   8  6  destination: the router it is for
 *  14  .. body: a kernel VXLAN datagram (VXLAN header + inner Ethernet frame), or probe data
 * ```
 * Nothing of the frame, not even its VXLAN header, crosses the wire in clear when sealed; the
 * origin and destination are sealed too, so only the hop is visible.
 */
import { readCounter, TAG_BYTES, writeCounter } from '../../crypto/aead';

export const VERSION = 0xa1;
export const FLAG_SEALED = 1;
export const HEADER_BYTES = 20;
export const INNER_BYTES = 14;
/** What the sleeve adds to a VXLAN datagram when sealed: header, inner header, tag. */
export const SEALED_OVERHEAD = HEADER_BYTES + INNER_BYTES + TAG_BYTES;
/** The largest UDP payload over IPv4. */
export const MAX_UDP_PAYLOAD = 65507;

export const Kind = { Frame: 0, ProbeRequest: 1, ProbeReply: 2 } as const;
export type Kind = (typeof Kind)[keyof typeof Kind];

/** Hops a datagram may take (Weave's mesh never needs more than a few). */
export const MAX_HOPS = 16;

const NAME_RE = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/** Peer names (48-bit, MAC notation) to and from their 6 bytes, cached: this is on the hot path. */
export class NameCodec {
  private readonly toBytes = new Map<string, Buffer>();
  private readonly toName = new Map<number, string>();

  encode(name: string): Buffer {
    let b = this.toBytes.get(name);
    if (!b) {
      if (!NAME_RE.test(name)) throw new RangeError(`peer name ${JSON.stringify(name)}: expected 6 bytes in MAC notation`);
      b = Buffer.from(name.replace(/:/g, ''), 'hex');
      this.toBytes.set(name, b);
      this.toName.set(b.readUIntBE(0, 6), name);
    }
    return b;
  }

  decode(buf: Buffer, off: number): string {
    const n = buf.readUIntBE(off, 6);
    let name = this.toName.get(n);
    if (!name) {
      name = [...buf.subarray(off, off + 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');
      if (this.toName.size < 65536) this.toName.set(n, name);
    }
    return name;
  }
}

export interface Header {
  sealed: boolean;
  sender: string;
  keyId: number;
  counter: number;
}

export interface Inner {
  kind: Kind;
  hops: number;
  origin: string;
  destination: string;
}

export function encodeHeader(names: NameCodec, sender: string, sealed: boolean, keyId: number, counter: number): Buffer {
  const h = Buffer.allocUnsafe(HEADER_BYTES);
  h[0] = VERSION;
  h[1] = sealed ? FLAG_SEALED : 0;
  names.encode(sender).copy(h, 2);
  h.writeUInt32BE(keyId >>> 0, 8);
  writeCounter(h, counter, 12);
  return h;
}

/** Parses the clear header; undefined when the datagram is not a sleeve datagram of this version. */
export function decodeHeader(names: NameCodec, d: Buffer): Header | undefined {
  if (d.length < HEADER_BYTES + INNER_BYTES || d[0] !== VERSION) return undefined;
  const counter = readCounter(d, 12);
  if (counter === undefined) return undefined;
  return { sealed: (d[1]! & FLAG_SEALED) !== 0, sender: names.decode(d, 2), keyId: d.readUInt32BE(8), counter };
}

export function encodeInner(names: NameCodec, i: Inner): Buffer {
  const b = Buffer.allocUnsafe(INNER_BYTES);
  b[0] = i.kind;
  b[1] = i.hops;
  names.encode(i.origin).copy(b, 2);
  names.encode(i.destination).copy(b, 8);
  return b;
}

export function decodeInner(names: NameCodec, p: Buffer): Inner | undefined {
  if (p.length < INNER_BYTES || p[0]! > Kind.ProbeReply) return undefined;
  return { kind: p[0] as Kind, hops: p[1]!, origin: names.decode(p, 2), destination: names.decode(p, 8) };
}
