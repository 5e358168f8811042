/**
 * Framing on mesh TCP connections: a 4-byte big-endian length, then that many bytes of JSON,
 * or of JSON compressed (zlib) for a peer that reads it. A frame over the limit (compressed:
 * one that inflates past it) or one that is not a JSON object is a protocol error: the
 * connection is closed, the router goes on.
 *
 * Why compressed: the large frames are whole buckets of a gossip channel (answers to digests:
 * a newcomer's first answer is the whole state, 2.3 MB at 1,000 peers), and their JSON repeats
 * peer names and field names on every key. A compressed body starts with zlib's header byte
 * 0x78, which no JSON object does, so a reader needs no flag.
 */
import { deflateSync, inflateSync } from 'node:zlib';

export const MAX_FRAME = 8 << 20;
/** Frames whose JSON has at least this many characters are compressed when the peer reads such frames. */
export const COMPRESS_FROM = 8 << 10;
/** The first byte of a zlib stream with deflate's default window (and of no JSON object). */
const ZLIB_HEAD = 0x78;

export class FrameError extends Error {}

/**
 * `msg` as a frame: its JSON written once, after the length, into one buffer; compressed
 * (fastest level) when `compress` is set and the JSON is COMPRESS_FROM characters or more.
 */
export function encodeFrame(msg: unknown, compress = false): Buffer {
  const json = JSON.stringify(msg);
  const len = Buffer.byteLength(json);
  if (compress && json.length >= COMPRESS_FROM && len <= MAX_FRAME) return lengthPrefixed(deflateSync(json, { level: 1 }));
  const out = withHead(len);
  out.write(json, 4);
  return out;
}

/** A buffer for a body of `len` bytes, its length head written; FrameError over the limit. */
function withHead(len: number): Buffer {
  if (len > MAX_FRAME) throw new FrameError(`frame of ${len} bytes exceeds ${MAX_FRAME}`);
  const out = Buffer.allocUnsafe(4 + len);
  out.writeUInt32BE(len, 0);
  return out;
}

/** Accumulates bytes and yields whole frames. */
export class FrameReader {
  private buf: Buffer = Buffer.alloc(0);
  /** Chunks not yet joined: a large frame arriving in many pieces is copied once, not once per piece. */
  private parts: Buffer[] = [];
  private partsLen = 0;
  private need = 4;

  constructor(private readonly max = MAX_FRAME) {}

  /** Returns the frames completed by `chunk`; throws FrameError on a bad or oversized frame. */
  push(chunk: Buffer): Record<string, unknown>[] {
    return this.pushRaw(chunk).map(parseFrame);
  }

  /** The bodies of the frames completed by `chunk`, as bytes (sealed frames are not JSON). */
  pushRaw(chunk: Buffer): Buffer[] {
    this.parts.push(chunk);
    this.partsLen += chunk.length;
    if (this.buf.length + this.partsLen < this.need) return [];
    // one chunk and nothing left over (most reads): its frames are read where they lie
    this.buf = !this.buf.length && this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.buf.length ? [this.buf, ...this.parts] : this.parts);
    this.parts = [];
    this.partsLen = 0;
    const out: Buffer[] = [];
    this.need = 4;
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32BE(0);
      if (len > this.max) throw new FrameError(`frame of ${len} bytes exceeds ${this.max}`);
      if (this.buf.length < 4 + len) {
        this.need = 4 + len;
        break;
      }
      out.push(this.buf.subarray(4, 4 + len));
      this.buf = this.buf.subarray(4 + len);
    }
    return out;
  }
}

/** A frame's body (compressed or not) as a JSON object; FrameError when it is not one. */
export function parseFrame(body: Buffer): Record<string, unknown> {
  if (body[0] === ZLIB_HEAD) {
    try {
      body = inflateSync(body, { maxOutputLength: MAX_FRAME });
    } catch {
      throw new FrameError(`compressed frame does not inflate to ${MAX_FRAME} bytes or less`);
    }
  }
  let msg: unknown;
  try {
    msg = JSON.parse(body.toString());
  } catch {
    throw new FrameError('frame is not JSON');
  }
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) throw new FrameError('frame is not a JSON object');
  return msg as Record<string, unknown>;
}

/** A 4-byte length prefix and `body`. */
export function lengthPrefixed(body: Buffer): Buffer {
  const out = withHead(body.length);
  body.copy(out, 4);
  return out;
}
