/**
 * A mesh connection's protection: the crypto handshake before anything else, then every frame
 * through the session (sealed with a secret, unchanged without), so connection.ts keeps one
 * path for both.
 *
 * Why it is this way: the handshake (src/crypto/handshake.ts) is the first exchange on every
 * connection, with or without a secret, so a router with a secret and one without refuse each
 * other with a message that says why, and nothing about the mesh (hello, topology, IPAM) is
 * sent before the peer proved it holds the same secret. Before the session exists the only
 * other frame accepted is a plain `bye` (a refusal: connection limit, wrong password), so an
 * old router's JSON hello cannot skip the handshake.
 */
import { ControlHandshake, deriveDataKeys, type ControlSession } from '../crypto/handshake';
import type { DataKeys } from '../crypto/aead';
import { FrameError, lengthPrefixed, parseFrame } from './frame';

export interface SecureChannelOptions {
  /** This router's peer name. */
  name: string;
  /** This side dialled the connection. */
  initiator: boolean;
  /** Pre-shared key (`derivePsk(password)`); undefined without a secret. */
  psk?: Buffer;
}

/** What one received frame gave: bytes to send back, a message, and whether the session just started. */
export interface ChannelStep {
  /** A whole frame (length-prefixed) to write back. */
  send?: Buffer;
  message?: Record<string, unknown>;
  opened?: boolean;
}

export class SecureChannel {
  private readonly hs: ControlHandshake;
  private session: ControlSession | undefined;

  constructor(o: SecureChannelOptions) {
    this.hs = new ControlHandshake(o);
  }

  /** The first frame to write (this side's handshake hello). */
  begin(): Buffer {
    return lengthPrefixed(this.hs.beginHandshake());
  }

  /** The session exists: frames are messages now. */
  get open(): boolean {
    return this.session !== undefined;
  }

  /** Frames are sealed (both sides hold the same secret). */
  get encrypted(): boolean {
    return this.session?.encrypted ?? false;
  }

  /**
   * One received frame body. Throws HandshakeError (and its kinds: mismatch, authentication)
   * or FrameError: the connection must close.
   */
  receive(body: Buffer): ChannelStep {
    if (this.session) return { message: parseFrame(this.session.open(body)) };
    if (body[0] === 0x7b) {
      // a refusal sent before any session: the only plain message accepted here
      const m = parseFrame(body);
      if (m.t !== 'bye') throw new FrameError('not a weft handshake (a message before the handshake completed)');
      return { message: m };
    }
    const step = this.hs.onHandshake(body);
    this.session = step.session;
    return { send: step.send && lengthPrefixed(step.send), opened: step.session !== undefined };
  }

  /** The bytes to write for `frame` (as `encodeFrame` makes it, shared between connections). */
  wrap(frame: Buffer): Buffer {
    if (!this.session?.encrypted) return frame;
    return lengthPrefixed(this.session.seal(frame.subarray(4)));
  }

  /** Data-path keys shared with this peer for `label`; undefined without a secret or before the session. */
  dataKeys(label: string): DataKeys | undefined {
    return this.session && deriveDataKeys(this.session, label);
  }
}
