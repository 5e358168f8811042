/**
 * The one AEAD weft uses, on mesh frames and on data-path datagrams: AES-256-GCM from
 * node:crypto (OpenSSL, in userspace: this kernel has no GCM and no ESP transform).
 *
 * Why AES-256-GCM: measured against ChaCha20-Poly1305 in the same run (`BENCH_ONLY=sleeve npm
 * run bench`, "AEAD seal" rows), it seals large datagrams faster on CPUs with AES instructions,
 * which every x86 server since 2010 has; the per-call cost (creating the cipher) is the same.
 *
 * Nonces are 12 bytes: 4 zero bytes, then a 64-bit big-endian counter. Every key is used in
 * one direction only and its counter never goes back, so a nonce never repeats under a key.
 * Counters are JavaScript numbers (exact up to 2^53, centuries of datagrams); a counter read
 * from the wire above that is refused.
 */
import { createCipheriv, createDecipheriv, createHash, type CipherGCM, type DecipherGCM } from 'node:crypto';

export const AEAD_ALGORITHM = 'aes-256-gcm';
export const KEY_BYTES = 32;
export const TAG_BYTES = 16;
export const NONCE_BYTES = 12;
/** Largest counter a peer may use (2^53 - 1). */
export const MAX_COUNTER = Number.MAX_SAFE_INTEGER;

/** Writes `counter` as the 8 big-endian bytes at `off`. */
export function writeCounter(buf: Buffer, counter: number, off: number): void {
  buf.writeUInt32BE(Math.floor(counter / 0x1_0000_0000), off);
  buf.writeUInt32BE(counter >>> 0, off + 4);
}

/** Reads the 8-byte big-endian counter at `off`; undefined when it exceeds MAX_COUNTER. */
export function readCounter(buf: Buffer, off: number): number | undefined {
  const hi = buf.readUInt32BE(off);
  if (hi > 0x1f_ffff) return undefined;
  return hi * 0x1_0000_0000 + buf.readUInt32BE(off + 4);
}

function nonce(counter: number): Buffer {
  const iv = Buffer.alloc(NONCE_BYTES);
  writeCounter(iv, counter, 4);
  return iv;
}

/**
 * Encrypts the concatenation of `parts` under `key` with the nonce of `counter`, binding `aad`.
 * Returns the ciphertext pieces followed by the 16-byte tag (ready for a gathered send).
 */
export function sealParts(key: Buffer, counter: number, aad: Buffer | undefined, parts: readonly Buffer[]): Buffer[] {
  const c = createCipheriv(AEAD_ALGORITHM, key, nonce(counter), { authTagLength: TAG_BYTES }) as CipherGCM;
  if (aad) c.setAAD(aad);
  const out: Buffer[] = [];
  for (const p of parts) out.push(c.update(p));
  const fin = c.final();
  if (fin.length) out.push(fin);
  out.push(c.getAuthTag());
  return out;
}

/** Decrypts `sealed` (ciphertext then tag); undefined when authentication fails. */
export function openSealed(key: Buffer, counter: number, aad: Buffer | undefined, sealed: Buffer): Buffer | undefined {
  if (sealed.length < TAG_BYTES) return undefined;
  const d = createDecipheriv(AEAD_ALGORITHM, key, nonce(counter), { authTagLength: TAG_BYTES }) as DecipherGCM;
  if (aad) d.setAAD(aad);
  d.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES));
  const pt = d.update(sealed.subarray(0, sealed.length - TAG_BYTES));
  try {
    const fin = d.final();
    return fin.length ? Buffer.concat([pt, fin]) : pt;
  } catch {
    return undefined;
  }
}

/** A 32-bit identifier of a key, sent in clear so the receiver picks the key without trying each. */
export function keyId(key: Buffer): number {
  return createHash('sha256').update('weft key id v1').update(key).digest().readUInt32BE(0);
}

/**
 * The data-path keys of one direct neighbour, for one control session: `tx` seals what this
 * router sends it, `rx` opens what it sends here (its `tx`).
 *
 * The send counter lives here, with the key, not in whoever uses it: a part that is stopped
 * and started again with the same keys continues the count, so a nonce is never reused.
 */
export class DataKeys {
  readonly txId: number;
  readonly rxId: number;
  private counter = 0;

  constructor(
    readonly tx: Buffer,
    readonly rx: Buffer,
  ) {
    if (tx.length !== KEY_BYTES || rx.length !== KEY_BYTES) throw new RangeError(`data keys must be ${KEY_BYTES} bytes`);
    this.txId = keyId(tx);
    this.rxId = keyId(rx);
  }

  /** The next unused send counter. */
  nextCounter(): number {
    if (this.counter >= MAX_COUNTER) throw new RangeError('data key exhausted: reconnect for new keys');
    return this.counter++;
  }
}
