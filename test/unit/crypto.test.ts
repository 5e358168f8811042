/** The control channel's handshake and sessions, the AEAD and the replay window: pure, no root. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ControlHandshake, deriveDataKeys, derivePsk, type ControlSession } from '../../src/crypto/handshake';
import { openSealed, sealParts, readCounter, writeCounter, MAX_COUNTER } from '../../src/crypto/aead';
import { ReplayWindow } from '../../src/crypto/replay';
import { AuthenticationError, EncryptionMismatchError, HandshakeError } from '../../src/common/errors';

const NAME_I = '02:00:00:00:00:01';
const NAME_R = '02:00:00:00:00:02';
const PSK = derivePsk('correct horse battery staple');
const OTHER_PSK = derivePsk('another password');

/**
 * Runs a handshake as a connection would: both hellos cross, then each side passes what it
 * receives to onHandshake and sends what that returns, in order, until neither has more.
 * `tamper` may rewrite a message in flight (direction, index of the message in that direction).
 */
function connect(
  i: ControlHandshake,
  r: ControlHandshake,
  tamper: (toResponder: boolean, n: number, b: Buffer) => Buffer = (_d, _n, b) => b,
): { si?: ControlSession; sr?: ControlSession; ei?: unknown; er?: unknown; toI: Buffer[]; toR: Buffer[] } {
  const toR: Buffer[] = [i.beginHandshake()];
  const toI: Buffer[] = [r.beginHandshake()];
  let si: ControlSession | undefined, sr: ControlSession | undefined, ei: unknown, er: unknown;
  let ri = 0, rr = 0;
  for (let round = 0; round < 8; round++) {
    while (rr < toR.length && !sr && !er) {
      try {
        const step = r.onHandshake(tamper(true, rr, toR[rr++]!));
        if (step.send) toI.push(step.send);
        sr = step.session;
      } catch (e) {
        er = e;
      }
    }
    while (ri < toI.length && !si && !ei) {
      try {
        const step = i.onHandshake(tamper(false, ri, toI[ri++]!));
        if (step.send) toR.push(step.send);
        si = step.session;
      } catch (e) {
        ei = e;
      }
    }
  }
  return { si, sr, ei, er, toI, toR };
}

const pair = (pskI?: Buffer, pskR?: Buffer) => [new ControlHandshake({ name: NAME_I, initiator: true, psk: pskI }), new ControlHandshake({ name: NAME_R, initiator: false, psk: pskR })] as const;

test('same secret: both sides get an encrypted session and frames cross both ways', () => {
  const [i, r] = pair(PSK, PSK);
  const { si, sr, ei, er } = connect(i, r);
  assert.equal(ei, undefined);
  assert.equal(er, undefined);
  assert.ok(si?.encrypted && sr?.encrypted);
  assert.equal(si.peerName, NAME_R);
  assert.equal(sr.peerName, NAME_I);
  const frame = Buffer.from('{"t":"hello","name":"x"}');
  const sealed = si.seal(frame);
  assert.ok(!sealed.includes(frame.subarray(0, 8)), 'the frame is not in clear');
  assert.deepEqual(sr.open(sealed), frame);
  assert.deepEqual(si.open(sr.seal(frame)), frame);
});

test('a wrong secret is refused by the dialled side before it confirms anything', () => {
  const [i, r] = pair(PSK, OTHER_PSK);
  const { si, sr, er, toI } = connect(i, r);
  assert.ok(er instanceof AuthenticationError, String(er));
  assert.match((er as Error).message, /could not prove.*password differs/);
  assert.equal(sr, undefined);
  assert.equal(si, undefined, 'the dialler never gets a session either');
  assert.equal(toI.length, 1, 'the dialled side sent only its hello, nothing a guess could be tested against');
});

test('the dialler refuses a listener with another secret', () => {
  // the listener's confirmation is checked too: feed the dialler a confirmation made with other keys
  const [i, r] = pair(PSK, PSK);
  const [i2, r2] = pair(OTHER_PSK, OTHER_PSK);
  const bad = connect(i2, r2).toI[1]!; // a valid confirmation, but of another session
  const { si, ei } = connect(i, r, (toR, n, b) => (!toR && n === 1 ? bad : b));
  assert.equal(si, undefined);
  assert.ok(ei instanceof AuthenticationError, String(ei));
});

test('encrypted and plain routers refuse each other, each saying which side lacks the secret', () => {
  const [i, r] = pair(PSK, undefined);
  const { ei, er } = connect(i, r);
  assert.ok(ei instanceof EncryptionMismatchError && er instanceof EncryptionMismatchError);
  assert.match((ei as Error).message, new RegExp(`peer ${NAME_R} does not use encryption and this router does`));
  assert.match((er as Error).message, new RegExp(`peer ${NAME_I} uses encryption .* this router has none`));
});

test('two routers without a secret get plain sessions and no data keys', () => {
  const [i, r] = pair(undefined, undefined);
  const { si, sr } = connect(i, r);
  assert.ok(si && sr && !si.encrypted && !sr.encrypted);
  const f = Buffer.from('plain');
  assert.deepEqual(sr.open(si.seal(f)), f);
  assert.equal(deriveDataKeys(si, 'sleeve'), undefined);
});

test('a replayed, reordered, altered or reflected frame fails authentication', () => {
  const [i, r] = pair(PSK, PSK);
  const { si, sr } = connect(i, r);
  const a = si!.seal(Buffer.from('first'));
  const b = si!.seal(Buffer.from('second'));
  const c = si!.seal(Buffer.from('third'));
  assert.equal(sr!.open(a).toString(), 'first');
  assert.throws(() => sr!.open(a), AuthenticationError, 'replay');
  // the failed open did not advance the receiver: the genuine next frame still opens
  assert.throws(() => sr!.open(c), AuthenticationError, 'reordered');
  const altered = Buffer.from(b);
  altered[0]! ^= 1;
  assert.throws(() => sr!.open(altered), AuthenticationError, 'altered');
  assert.equal(sr!.open(b).toString(), 'second');
  assert.throws(() => si!.open(si!.seal(Buffer.from('mirror'))), AuthenticationError, 'a frame reflected back to its sender');
});

test('the transcript is bound: a name changed in flight breaks the handshake', () => {
  const [i, r] = pair(PSK, PSK);
  const { si, sr, er } = connect(i, r, (toR, n, b) => {
    if (!toR || n !== 0) return b;
    const c = Buffer.from(b);
    c[7 + NAME_I.length - 1] = 0x39; // the dialler's name ends in '9' instead of '1'
    return c;
  });
  assert.equal(sr, undefined);
  assert.equal(si, undefined);
  assert.ok(er instanceof AuthenticationError, String(er));
});

test('malformed or out-of-order handshake frames are handshake errors', () => {
  const [i0] = pair(PSK, PSK);
  assert.throws(() => i0.onHandshake(Buffer.from('WFH1')), HandshakeError, 'before beginHandshake');
  const [i] = pair(PSK, PSK);
  i.beginHandshake();
  assert.throws(() => i.onHandshake(Buffer.from('GET / HTTP/1.1\r\n')), /not a weft handshake/);
  const [i2, r2] = pair(PSK, PSK);
  i2.beginHandshake();
  r2.beginHandshake();
  const confirmFirst = Buffer.concat([Buffer.from('WFC1'), Buffer.alloc(32)]);
  assert.throws(() => r2.onHandshake(confirmFirst), /confirmation before hello/);
  const [i3, r3] = pair(PSK, PSK);
  const h = i3.beginHandshake();
  r3.beginHandshake();
  const v2 = Buffer.from(h);
  v2[4] = 2;
  assert.throws(() => r3.onHandshake(v2), /version 2 is not ours/);
});

test('data keys: one pair per label, directional, the same object for the same label', () => {
  const [i, r] = pair(PSK, PSK);
  const { si, sr } = connect(i, r);
  const ki = deriveDataKeys(si!, 'sleeve')!;
  const kr = deriveDataKeys(sr!, 'sleeve')!;
  assert.deepEqual(ki.tx, kr.rx);
  assert.deepEqual(ki.rx, kr.tx);
  assert.notDeepEqual(ki.tx, ki.rx);
  assert.equal(ki.txId, kr.rxId);
  assert.equal(deriveDataKeys(si!, 'sleeve'), ki, 'same object, so its counter continues');
  assert.equal(ki.nextCounter(), 0);
  assert.equal(deriveDataKeys(si!, 'sleeve')!.nextCounter(), 1);
  assert.notDeepEqual(deriveDataKeys(si!, 'other')!.tx, ki.tx);
  // a new connection between the same two routers has other keys
  const [i2, r2] = pair(PSK, PSK);
  assert.notDeepEqual(deriveDataKeys(connect(i2, r2).si!, 'sleeve')!.tx, ki.tx);
});

test('AEAD: parts seal as their concatenation; a changed counter, AAD, ciphertext or tag fails', () => {
  const key = Buffer.alloc(32, 9);
  const aad = Buffer.from('header');
  const sealed = Buffer.concat(sealParts(key, 7, aad, [Buffer.from('abc'), Buffer.from('defgh')]));
  assert.equal(openSealed(key, 7, aad, sealed)?.toString(), 'abcdefgh');
  assert.equal(openSealed(key, 8, aad, sealed), undefined);
  assert.equal(openSealed(key, 7, Buffer.from('Header'), sealed), undefined);
  for (const at of [0, sealed.length - 1]) {
    const x = Buffer.from(sealed);
    x[at]! ^= 0x80;
    assert.equal(openSealed(key, 7, aad, x), undefined, `byte ${at} flipped`);
  }
  assert.equal(openSealed(key, 7, aad, sealed.subarray(0, 10)), undefined);
});

test('counters round-trip through 8 bytes up to 2^53-1; larger ones are refused', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: MAX_COUNTER }), (n) => {
      const b = Buffer.alloc(8);
      writeCounter(b, n, 0);
      return readCounter(b, 0) === n;
    }),
  );
  assert.equal(readCounter(Buffer.alloc(8, 0xff), 0), undefined);
});

test('replay window: agrees with a model (seen set, highest, window size) on any sequence', () => {
  fc.assert(
    fc.property(
      fc.array(fc.oneof(fc.integer({ min: 0, max: 5000 }), fc.integer({ min: 0, max: 2 ** 40 })), { maxLength: 400 }),
      fc.constantFrom(2, 4, 64),
      (seq, blocks) => {
        const w = new ReplayWindow(blocks);
        const seen = new Set<number>();
        let top = -1;
        for (const n of seq) {
          const fresh = !seen.has(n) && (n > top || top - n < w.size);
          if (w.check(n) !== fresh) return false;
          if (fresh) {
            w.accept(n);
            seen.add(n);
            top = Math.max(top, n);
          }
        }
        return true;
      },
    ),
    { numRuns: 300 },
  );
});

test('replay window: reordering inside the window is accepted once; older is refused', () => {
  const w = new ReplayWindow(64);
  for (const n of [0, 2, 1, 100, 50, 3000]) {
    assert.ok(w.check(n), `fresh ${n}`);
    w.accept(n);
  }
  for (const n of [0, 2, 1, 100, 50, 3000]) assert.equal(w.check(n), false, `seen ${n}`);
  assert.ok(w.check(3000 - w.size + 1), 'inside the window');
  assert.equal(w.check(3000 - w.size), false, 'just outside the window');
});
