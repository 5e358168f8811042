/**
 * The crypto handshake of a mesh connection, as a small state machine the connection drives,
 * and the session it yields (an AEAD on every later frame, and the data path's keys).
 *
 * Why it is this way:
 * - Per-connection ephemeral X25519 keys, so every connection has fresh keys and a recorded
 *   connection cannot be decrypted later with the password.
 * - The shared secret enters as the HKDF salt over the Diffie-Hellman output, with the
 *   transcript (both first messages: versions, modes, names, public keys) in every label, so a
 *   peer without the secret, or a man in the middle, derives other keys.
 * - Key confirmation before anything else: each side proves it derived the same keys (an HMAC
 *   over the transcript). The side that was dialled confirms only after the dialler has, so a
 *   stranger who merely connects learns nothing it could test password guesses against; the
 *   password is stretched with scrypt (`derivePsk`) for the dialled-out case.
 * - A router with a secret and one without refuse each other with a message that says which
 *   side lacks it (`EncryptionMismatchError`); two routers without a secret complete the same
 *   exchange and get a plain session, so the connection code has one path.
 * - Frames are sealed with a per-direction key and a counter nonce that both sides advance in
 *   step; TCP delivers in order, so a replayed, reordered, dropped or altered frame fails
 *   authentication and `open` throws: the connection closes.
 *
 * Flow (the dialler is the initiator; both send their first message at once):
 *   I -> R  hello(I)        R -> I  hello(R)
 *   I -> R  confirm(I)      (I sends it on hello(R); R checks it, then)
 *   R -> I  confirm(R)      R's session starts; I's starts when it checks confirm(R)
 * Without secrets the sessions start on the peer's hello.
 */
import { createHash, createHmac, createPublicKey, diffieHellman, generateKeyPairSync, hkdfSync, scryptSync, timingSafeEqual, type KeyObject } from 'node:crypto';
import { AuthenticationError, ConfigError, EncryptionMismatchError, HandshakeError } from '../common/errors';
import { DataKeys, KEY_BYTES, openSealed, sealParts, TAG_BYTES } from './aead';

const HELLO_MAGIC = Buffer.from('WFH1');
const CONFIRM_MAGIC = Buffer.from('WFC1');
const VERSION = 1;
const MODE_PLAIN = 0;
const MODE_SECRET = 1;
const MAX_NAME = 64;
const PUB_BYTES = 32;
const MAC_BYTES = 32;
/** DER prefix of an X25519 SubjectPublicKeyInfo; the raw 32-byte key follows it. */
const X25519_SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

/** Stretches a password into the 32-byte pre-shared key the handshake uses (scrypt, once per process). */
export function derivePsk(password: string | Buffer): Buffer {
  const pw = typeof password === 'string' ? Buffer.from(password, 'utf8') : password;
  if (pw.length === 0) throw new ConfigError('password', 'empty');
  return scryptSync(pw, 'weft psk v1', KEY_BYTES, { N: 1 << 14, r: 8, p: 1 });
}

export interface HandshakeOptions {
  /** This router's peer name (bound into the transcript). */
  name: string;
  /** True on the side that dialled the connection. */
  initiator: boolean;
  /** The pre-shared key from `derivePsk`; undefined when this router runs without a secret. */
  psk?: Buffer;
}

/** What a handshake step produced: bytes to send, and the session once it is established. */
export interface HandshakeStep {
  send?: Buffer;
  session?: ControlSession;
}

type State = 'new' | 'hello-sent' | 'confirm-sent' | 'awaiting-confirm' | 'done' | 'failed';

/**
 * One connection's handshake. Call `beginHandshake()` once and send its bytes as the first
 * frame; pass every frame received before the session exists to `onHandshake`, sending what
 * it returns; from the step that returns `session` on, frames go through the session.
 * Any error thrown means: close the connection (and log the error's message).
 */
export class ControlHandshake {
  private state: State = 'new';
  private readonly ephemeral?: { priv: KeyObject; pub: Buffer };
  private ownHello?: Buffer;
  private keys?: SessionKeys;
  /** The peer's name from its hello, once received. */
  peerName?: string;

  constructor(private readonly o: HandshakeOptions) {
    if (Buffer.byteLength(o.name) > MAX_NAME) throw new RangeError(`name: longer than ${MAX_NAME} bytes`);
    if (o.psk && o.psk.length !== KEY_BYTES) throw new RangeError(`psk: must be ${KEY_BYTES} bytes (use derivePsk)`);
    if (o.psk) {
      const { privateKey, publicKey } = generateKeyPairSync('x25519');
      this.ephemeral = { priv: privateKey, pub: publicKey.export({ format: 'der', type: 'spki' }).subarray(X25519_SPKI_PREFIX.length) };
    }
  }

  get encrypted(): boolean {
    return this.o.psk !== undefined;
  }

  /** This side's first message. */
  beginHandshake(): Buffer {
    if (this.state !== 'new') throw new HandshakeError('handshake already begun');
    const name = Buffer.from(this.o.name, 'utf8');
    const head = Buffer.from([...HELLO_MAGIC, VERSION, this.encrypted ? MODE_SECRET : MODE_PLAIN, name.length]);
    this.ownHello = Buffer.concat([head, name, this.ephemeral?.pub ?? Buffer.alloc(0)]);
    this.state = 'hello-sent';
    return this.ownHello;
  }

  /** Handles one received handshake frame; see the class comment. */
  onHandshake(frame: Buffer): HandshakeStep {
    try {
      return this.step(frame);
    } catch (e) {
      this.state = 'failed';
      throw e;
    }
  }

  private step(frame: Buffer): HandshakeStep {
    switch (this.state) {
      case 'hello-sent':
        return this.onHello(frame);
      case 'confirm-sent':
      case 'awaiting-confirm':
        return this.onConfirm(frame);
      case 'new':
        throw new HandshakeError('handshake frame received before beginHandshake()');
      default:
        throw new HandshakeError(`handshake frame received in state ${this.state}`);
    }
  }

  private onHello(frame: Buffer): HandshakeStep {
    if (frame.length < 7 || !frame.subarray(0, 4).equals(HELLO_MAGIC)) {
      throw new HandshakeError(
        frame.length >= 4 && frame.subarray(0, 4).equals(CONFIRM_MAGIC) ? 'handshake out of order: confirmation before hello' : 'not a weft handshake (bad magic)',
      );
    }
    const version = frame[4]!;
    if (version !== VERSION) throw new HandshakeError(`handshake version ${version} is not ours (${VERSION})`);
    const mode = frame[5]!;
    const nameLen = frame[6]!;
    if (mode !== MODE_PLAIN && mode !== MODE_SECRET) throw new HandshakeError(`unknown handshake mode ${mode}`);
    const wantLen = 7 + nameLen + (mode === MODE_SECRET ? PUB_BYTES : 0);
    if (nameLen > MAX_NAME || frame.length !== wantLen) throw new HandshakeError(`malformed handshake hello (${frame.length} bytes)`);
    this.peerName = frame.subarray(7, 7 + nameLen).toString('utf8');
    const peer = this.peerName;
    if (mode === MODE_SECRET && !this.encrypted) {
      throw new EncryptionMismatchError(`peer ${peer} uses encryption (a password) and this router has none: give it the same --password-file or WEFT_PASSWORD`);
    }
    if (mode === MODE_PLAIN && this.encrypted) {
      throw new EncryptionMismatchError(`peer ${peer} does not use encryption and this router does (a password is set): give the peer the same password, or remove it here`);
    }
    const [helloI, helloR] = this.o.initiator ? [this.ownHello!, frame] : [frame, this.ownHello!];
    const transcript = createHash('sha256').update('weft handshake v1').update(lenPrefixed(helloI)).update(lenPrefixed(helloR)).digest();
    if (!this.encrypted) {
      this.state = 'done';
      return { session: new ControlSession(peer, this.o.initiator, undefined) };
    }
    const peerPub = createPublicKey({ key: Buffer.concat([X25519_SPKI_PREFIX, frame.subarray(7 + nameLen)]), format: 'der', type: 'spki' });
    const shared = diffieHellman({ privateKey: this.ephemeral!.priv, publicKey: peerPub });
    if (shared.every((b) => b === 0)) throw new HandshakeError(`peer ${peer} sent a degenerate public key`);
    this.keys = scheduleKeys(shared, this.o.psk!, transcript);
    if (this.o.initiator) {
      this.state = 'confirm-sent';
      return { send: confirmMessage(this.keys.confirmI, transcript) };
    }
    this.state = 'awaiting-confirm';
    return {};
  }

  private onConfirm(frame: Buffer): HandshakeStep {
    if (frame.length !== 4 + MAC_BYTES || !frame.subarray(0, 4).equals(CONFIRM_MAGIC)) throw new HandshakeError(`malformed handshake confirmation (${frame.length} bytes)`);
    const k = this.keys!;
    const expected = confirmMessage(this.o.initiator ? k.confirmR : k.confirmI, k.transcript);
    if (!timingSafeEqual(frame, expected)) {
      throw new AuthenticationError(`peer ${this.peerName} could not prove it holds this router's secret: its password differs (or the handshake was tampered with)`);
    }
    this.state = 'done';
    const session = new ControlSession(this.peerName!, this.o.initiator, k);
    return this.o.initiator ? { session } : { send: confirmMessage(k.confirmR, k.transcript), session };
  }
}

interface SessionKeys {
  transcript: Buffer;
  confirmI: Buffer;
  confirmR: Buffer;
  frameI2R: Buffer;
  frameR2I: Buffer;
  /** Root of every key derived later (`deriveDataKeys`). */
  exporter: Buffer;
}

function lenPrefixed(b: Buffer): Buffer {
  const h = Buffer.alloc(2);
  h.writeUInt16BE(b.length);
  return Buffer.concat([h, b]);
}

function expand(shared: Buffer, psk: Buffer, label: string, transcript: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', shared, psk, Buffer.concat([Buffer.from(`weft v1 ${label} `), transcript]), KEY_BYTES));
}

function scheduleKeys(shared: Buffer, psk: Buffer, transcript: Buffer): SessionKeys {
  const k = (label: string) => expand(shared, psk, label, transcript);
  return { transcript, confirmI: k('confirm i'), confirmR: k('confirm r'), frameI2R: k('frame i2r'), frameR2I: k('frame r2i'), exporter: k('exporter') };
}

function confirmMessage(key: Buffer, transcript: Buffer): Buffer {
  return Buffer.concat([CONFIRM_MAGIC, createHmac('sha256', key).update(transcript).digest()]);
}

/**
 * An established connection's frame protection. With a secret, `seal` encrypts a frame and
 * `open` decrypts one, each with its own direction's key and counter; without, both return the
 * frame unchanged. `open` throws AuthenticationError on any frame that does not authenticate
 * as the next one in order; the connection must then close.
 */
export class ControlSession {
  private txSeq = 0;
  private rxSeq = 0;
  private readonly tx?: Buffer;
  private readonly rx?: Buffer;
  /** Keys derived for the data path, one object per label (so its send counter is shared). */
  private readonly derived = new Map<string, DataKeys>();

  constructor(
    readonly peerName: string,
    readonly initiator: boolean,
    private readonly keys: SessionKeys | undefined,
  ) {
    if (keys) [this.tx, this.rx] = initiator ? [keys.frameI2R, keys.frameR2I] : [keys.frameR2I, keys.frameI2R];
  }

  get encrypted(): boolean {
    return this.keys !== undefined;
  }

  /** Bytes a sealed frame adds (the tag). */
  get overhead(): number {
    return this.keys ? TAG_BYTES : 0;
  }

  seal(frame: Buffer): Buffer {
    if (!this.tx) return frame;
    return Buffer.concat(sealParts(this.tx, this.txSeq++, undefined, [frame]));
  }

  open(frame: Buffer): Buffer {
    if (!this.rx) return frame;
    const seq = this.rxSeq;
    const pt = openSealed(this.rx, seq, undefined, frame);
    if (!pt) throw new AuthenticationError(`frame ${seq} from ${this.peerName} failed authentication: altered, replayed or out of order`);
    this.rxSeq++;
    return pt;
  }

  /** See `deriveDataKeys`. */
  dataKeys(label: string): DataKeys | undefined {
    const exporter = this.keys?.exporter;
    if (!exporter) return undefined;
    let keys = this.derived.get(label);
    if (!keys) {
      const k = (dir: string) => Buffer.from(hkdfSync('sha256', exporter, Buffer.alloc(0), Buffer.from(`weft v1 data ${dir} ${label}`), KEY_BYTES));
      const i2r = k('i2r');
      const r2i = k('r2i');
      keys = this.initiator ? new DataKeys(i2r, r2i) : new DataKeys(r2i, i2r);
      this.derived.set(label, keys);
    }
    return keys;
  }
}

/**
 * The data path's keys with the peer at the other end of `session`, for `label` (e.g.
 * 'sleeve'): separate keys per direction, both ends deriving the same pair (one's tx is the
 * other's rx). Undefined for a plain session. The same object is returned for the same label,
 * so its send counter is never restarted under the same key.
 */
export function deriveDataKeys(session: ControlSession, label: string): DataKeys | undefined {
  return session.dataKeys(label);
}
