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

test('of two routers that learn of each other from gossip, the smaller name dials at once and the larger waits, dialling only if no connection came', () => {
  const mk = (self: string) => {
    const connected = new Set<string>();
    const dials: string[] = [];
    const m = new ConnectionMaker(
      { dial: (addr) => void dials.push(addr), canDial: () => true, connectedTo: (p) => connected.has(p), heardFrom: () => true, isReachable: () => true, wanted: () => true },
      { defaultPort: 6783, retryMinMs: 1000, retryMaxMs: 60_000, self },
    );
    return { m, connected, dials };
  };
  const small = mk('0a:00:00:00:00:01');
  const large = mk('0a:00:00:00:00:02');
  small.m.learn('10.0.0.2', '0a:00:00:00:00:02', 0);
  large.m.learn('10.0.0.1', '0a:00:00:00:00:01', 0);
  small.m.tick(0);
  large.m.tick(0);
  assert.deepEqual(small.dials, ['10.0.0.2:6783'], 'the smaller name dials at once');
  assert.deepEqual(large.dials, [], 'the larger waits');
  // the smaller's connection arrives: the larger never dials
  large.connected.add('0a:00:00:00:00:01');
  large.m.tick(5000);
  assert.deepEqual(large.dials, []);
  assert.equal(large.m.list()[0]!.state, 'established');
  // no connection within the wait (the smaller cannot reach it): the larger dials itself
  const lonely = mk('0a:00:00:00:00:03');
  lonely.m.learn('10.0.0.1', '0a:00:00:00:00:01', 0);
  lonely.m.tick(1900);
  assert.deepEqual(lonely.dials, [], 'still waiting within twice the minimum retry');
  lonely.m.tick(2600);
  assert.deepEqual(lonely.dials, ['10.0.0.1:6783'], 'dialled once the wait is over');
  // an address learnt without a name, or a router without one of its own, dials at once as before
  const plain = mk('0a:00:00:00:00:09');
  plain.m.learn('10.0.0.7');
  plain.m.tick();
  assert.deepEqual(plain.dials, ['10.0.0.7:6783']);
});

test('a peer learnt from gossip is not dialled while a connection from its host is in its handshake here; a peer source’s address still is', () => {
  const pending = new Set<string>();
  const dials: string[] = [];
  const m = new ConnectionMaker(
    { dial: (addr) => void dials.push(addr), canDial: () => true, connectedTo: () => false, heardFrom: () => true, isReachable: () => true, wanted: () => true, inboundPendingFrom: (h) => pending.has(h) },
    // the smaller name: it would dial at once
    { defaultPort: 6783, retryMinMs: 1000, retryMaxMs: 60_000, self: '0a:00:00:00:00:01' },
  );
  pending.add('10.0.0.2');
  m.learn('10.0.0.2', '0a:00:00:00:00:02', 0);
  m.setTargets('flags', ['10.0.0.3']);
  pending.add('10.0.0.3');
  m.tick(0);
  assert.deepEqual(dials, ['10.0.0.3:6783'], 'only the address a peer source asked for');
  m.tick(250);
  assert.deepEqual(dials, ['10.0.0.3:6783']);
  // the handshake failed or was dropped: nothing pending from that host any more
  pending.delete('10.0.0.2');
  m.tick(500);
  assert.deepEqual(dials, ['10.0.0.3:6783', '10.0.0.2:6783']);
});
