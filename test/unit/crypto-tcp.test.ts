/**
 * The handshake state machine dropped into a TCP connection the way the mesh frames its
 * messages (4-byte big-endian length, then the bytes): both sides send their hello at once,
 * nothing but handshake frames before the session, sealed JSON after it. No root.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect, type Socket } from 'node:net';
import { ControlHandshake, derivePsk, type ControlSession } from '../../src/crypto/handshake';
import { AuthenticationError, EncryptionMismatchError, HandshakeError } from '../../src/common/errors';

const frame = (b: Buffer) => {
  const h = Buffer.alloc(4);
  h.writeUInt32BE(b.length);
  return Buffer.concat([h, b]);
};

/** One end: runs the handshake, then opens sealed frames; records what happened. */
class End {
  buf = Buffer.alloc(0);
  session?: ControlSession;
  error?: Error;
  got: unknown[] = [];
  readonly closed: Promise<void>;

  constructor(
    readonly sock: Socket,
    readonly name: string,
    readonly hs: ControlHandshake,
  ) {
    sock.on('data', (d: Buffer) => this.onData(d));
    this.closed = new Promise((r) => sock.once('close', () => r()));
    sock.on('error', () => undefined);
    sock.write(frame(hs.beginHandshake()));
  }

  private onData(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    while (this.buf.length >= 4 && this.buf.length >= 4 + this.buf.readUInt32BE(0)) {
      const f = this.buf.subarray(4, 4 + this.buf.readUInt32BE(0));
      this.buf = this.buf.subarray(4 + f.length);
      try {
        if (!this.session) {
          const step = this.hs.onHandshake(f);
          if (step.send) this.sock.write(frame(step.send));
          if (step.session) {
            this.session = step.session;
            // the first thing after the handshake: the mesh's hello, sealed
            this.send({ t: 'hello', name: this.name });
          }
        } else {
          this.got.push(JSON.parse(this.session.open(f).toString()));
        }
      } catch (e) {
        this.error = e as Error;
        this.sock.destroy();
        return;
      }
    }
  }

  send(msg: unknown): Buffer {
    const sealed = this.session!.seal(Buffer.from(JSON.stringify(msg)));
    const f = frame(sealed);
    this.sock.write(f);
    return f;
  }
}

async function pair(pskA?: Buffer, pskB?: Buffer): Promise<{ a: End; b: End; close(): void }> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  const accepted = new Promise<Socket>((r) => server.once('connection', r));
  const sa = connect(port, '127.0.0.1');
  await new Promise<void>((r) => sa.once('connect', () => r()));
  const sb = await accepted;
  const a = new End(sa, 'a', new ControlHandshake({ name: 'a', initiator: true, psk: pskA }));
  const b = new End(sb, 'b', new ControlHandshake({ name: 'b', initiator: false, psk: pskB }));
  return {
    a,
    b,
    close: () => {
      sa.destroy();
      sb.destroy();
      server.close();
    },
  };
}

async function until(f: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 5000;
  while (!f()) {
    if (Date.now() > end) throw new Error(`not within 5 s: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const psk = derivePsk('tcp test');

test('over TCP: sessions on both ends, sealed hellos cross, a replayed frame closes the connection', async () => {
  const p = await pair(psk, psk);
  try {
    await until(() => p.a.got.length === 1 && p.b.got.length === 1, 'sealed hellos exchanged');
    assert.deepEqual(p.b.got[0], { t: 'hello', name: 'a' });
    assert.equal(p.b.hs.peerName, 'a');
    const f = p.a.send({ t: 'gossip', n: 1 });
    await until(() => p.b.got.length === 2, 'a gossip frame');
    p.a.sock.write(f); // the same frame again, as an attacker on the path would
    await p.b.closed;
    assert.ok(p.b.error instanceof AuthenticationError, String(p.b.error));
    assert.equal(p.b.got.length, 2, 'the replay was not taken');
  } finally {
    p.close();
  }
});

test('over TCP: a wrong secret is refused before any message, and the dialler learns it from the close', async () => {
  const p = await pair(psk, derivePsk('other'));
  try {
    await p.b.closed;
    assert.ok(p.b.error instanceof AuthenticationError);
    assert.equal(p.a.session, undefined);
    assert.deepEqual([p.a.got, p.b.got], [[], []], 'no message crossed');
  } finally {
    p.close();
  }
});

test('over TCP: encrypted vs plain are refused on both ends with the reason', async () => {
  const p = await pair(psk, undefined);
  try {
    await Promise.all([p.a.closed, p.b.closed]);
    assert.ok(p.a.error instanceof EncryptionMismatchError || p.b.error instanceof EncryptionMismatchError);
    for (const e of [p.a.error, p.b.error].filter(Boolean)) assert.match(e!.message, /encryption/);
  } finally {
    p.close();
  }
});

test('over TCP: a stranger sending something else is a handshake error', async () => {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  const accepted = new Promise<Socket>((r) => server.once('connection', r));
  const s = connect(port, '127.0.0.1');
  s.on('error', () => undefined);
  const end = new End(await accepted, 'b', new ControlHandshake({ name: 'b', initiator: false, psk }));
  s.write(frame(Buffer.from('{"t":"hello","proto":"weft"}')));
  await end.closed;
  assert.ok(end.error instanceof HandshakeError);
  assert.match(end.error!.message, /not a weft handshake/);
  s.destroy();
  server.close();
});
