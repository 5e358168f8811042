/** The connection maker's targets: when they are dialled again. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConnectionMaker } from '../../src/mesh/connection-maker';

function maker() {
  const connected = new Set<string>();
  const dials: string[] = [];
  const m = new ConnectionMaker(
    {
      dial: (addr) => void dials.push(addr),
      canDial: () => true,
      connectedTo: (p) => connected.has(p),
      heardFrom: () => true,
      isReachable: (p) => connected.has(p),
      wanted: () => true,
    },
    { defaultPort: 6783, retryMinMs: 1000, retryMaxMs: 60_000 },
  );
  return { m, connected, dials };
}

test('a target established through the peer’s own connection is dialled again once that connection closes', () => {
  const { m, connected, dials } = maker();
  m.setTargets('flags', ['10.0.0.2']);
  m.tick(0);
  assert.deepEqual(dials, ['10.0.0.2:6783']);
  // our dial loses to the peer's inbound connection (a duplicate), which is what stays
  m.identified('10.0.0.2:6783', 'peer-b');
  connected.add('peer-b');
  m.closed('10.0.0.2:6783', 'duplicate connection', true);
  assert.equal(m.list()[0]!.state, 'established');
  m.tick(10_000);
  assert.equal(dials.length, 1, 'not dialled while connected through the other');
  // the peer's connection closes: nothing reports it to this target
  connected.delete('peer-b');
  m.tick(20_000);
  assert.equal(m.list()[0]!.state, 'retrying');
  m.tick(22_000);
  assert.deepEqual(dials, ['10.0.0.2:6783', '10.0.0.2:6783'], 'dialled again within the minimum retry time');
});

test('a target established by its own dial stays so while that connection lives', () => {
  const { m, connected, dials } = maker();
  m.setTargets('flags', ['10.0.0.3']);
  m.tick(0);
  m.established('10.0.0.3:6783', 'peer-c');
  connected.add('peer-c');
  for (let t = 1000; t < 10_000; t += 1000) m.tick(t);
  assert.equal(dials.length, 1);
  assert.equal(m.list()[0]!.state, 'established');
});
