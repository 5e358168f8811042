/**
 * Framing on mesh TCP connections: a 4-byte big-endian length, then that many bytes of JSON.
 * A frame over the limit or one that is not a JSON object is a protocol error: the
 * connection is closed, the router goes on.
 */
export const MAX_FRAME = 8 << 20;

export class FrameError extends Error {}

/** `msg` as a frame: its JSON written once, after the length, into one buffer. */
export function encodeFrame(msg: unknown): Buffer {
  const json = JSON.stringify(msg);
  const out = withHead(Buffer.byteLength(json));
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

/** A frame's body as a JSON object; FrameError when it is not one. */
export function parseFrame(body: Buffer): Record<string, unknown> {
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
