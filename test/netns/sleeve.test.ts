/**
 * The sleeve overlay in namespaces, without routers (test/helpers/sleeve-fixture.ts plays the
 * mesh): three hosts on an underlay bridge, pods on each, encrypted and plain. Pods ping and
 * stream; a capture on the underlay shows what crosses the wire; replayed, altered and
 * wrongly keyed datagrams are dropped and counted; hosts 1 and 3 cut off from each other reach
 * each other through host 2, and go direct again when the cut heals.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Netns } from '../helpers/netns';
import { needs } from '../helpers/needs';
import { SleeveFixture, UNDERLAY_NET, peerName, podIp } from '../helpers/sleeve-fixture';
import { Capture, type Ipv4Packet } from '../helpers/pcap';
import { tcpStream } from '../helpers/stream';
import { SLEEVE_PORT, SLEEVE_STREAM_PORT } from '../../src/datapath/sleeve/sleeve';

const skip = needs({ root: true, tools: ['ip', 'tcpdump', 'ethtool', 'nft', 'iperf3', 'nsenter', 'bridge', 'conntrack'] });

/** 16 bytes that ping repeats through its payload. */
const PATTERN = 'deadbeefcafef00d5eed1e55c0ffee42';
const STD = 0; // pod index: MTU 1450
const BIG = 1; // pod index: MTU 65000, the sleeve's inner MTU

const ping = (from: Netns, to: string, extra: string[] = []) => from.tryRun('ping', ['-c', '2', '-i', '0.2', '-W', '2', ...extra, to], 20_000);

/** Pings until one answers (ARP and learning settle), at most `ms`. */
async function pingUntil(from: Netns, to: string, ms = 10_000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (from.tryRun('ping', ['-c', '1', '-W', '1', to], 5000).ok) return true;
  }
  return false;
}


const bytesOf = (hex: string) => Buffer.from(hex, 'hex');
const addr4 = (a: string) => Buffer.from(a.split('.').map(Number));

/** Captures on the underlay while pinging with PATTERN from host 1's pod to host 2's. */
async function captureUnderlay(f: SleeveFixture, dir: string, name: string): Promise<Ipv4Packet[]> {
  const cap = await Capture.start(f.underlay, 'ub', join(dir, `${name}.pcap`));
  const r = ping(f.hosts[0]!.pods[STD]!, podIp(2, STD), ['-p', PATTERN, '-s', '600', '-c', '5']);
  const pkts = await cap.stop();
  assert.ok(r.ok, `ping with pattern: ${r.out}${r.err}`);
  assert.ok(pkts.length > 0, `tcpdump captured nothing: ${cap.log}`);
  return pkts;
}

function findings(pkts: Ipv4Packet[]) {
  const hostAddr = (a: string) => a.startsWith(`${UNDERLAY_NET}.`);
  const between = pkts.filter((p) => hostAddr(p.src) && hostAddr(p.dst));
  const innerHeader = Buffer.concat([addr4(podIp(1, STD)), addr4(podIp(2, STD))]);
  return {
    sleeve: between.filter((p) => p.proto === 17 && (p.dport === SLEEVE_PORT || p.sport === SLEEVE_PORT)).length,
    stream: between.filter((p) => p.proto === 6 && (p.dport === SLEEVE_STREAM_PORT || p.sport === SLEEVE_STREAM_PORT)).length,
    vxlan: between.filter((p) => p.proto === 17 && [6784, 6786, 4789, 8472].some((x) => p.dport === x || p.sport === x)).length,
    notUdp: between.filter((p) => p.proto !== 17).length,
    other: between.filter((p) => !(p.proto === 17 && (p.dport === SLEEVE_PORT || p.sport === SLEEVE_PORT)) && !(p.proto === 6 && (p.dport === SLEEVE_STREAM_PORT || p.sport === SLEEVE_STREAM_PORT))).length,
    pattern: pkts.filter((p) => p.frame.includes(bytesOf(PATTERN))).length,
    innerHeader: pkts.filter((p) => p.frame.includes(innerHeader)).length,
  };
}

/** Sends raw UDP payloads from inside `ns` to ip:port (a small node process there). */
function sendRaw(ns: Netns, ip: string, port: number, payloads: Buffer[]): void {
  const script = `const s=require('dgram').createSocket('udp4');const d=${JSON.stringify(payloads.map((p) => p.toString('hex')))};let n=0;for(const h of d)s.send(Buffer.from(h,'hex'),${port},'${ip}',()=>{if(++n===d.length)s.close()});`;
  ns.run(process.execPath, ['-e', script]);
}

async function until(f: () => Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await f())) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('sleeve over UDP (--sleeve-carrier udp), encrypted, three hosts', { skip, concurrency: false }, () => {
  let f: SleeveFixture;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'weft-sleeve-'));
    f = await SleeveFixture.up({ hosts: 3, prefix: 'slvE', encrypted: true, carrier: 'udp', pods: [{ mtu: 1450 }, { mtu: 65000 }] });
  });
  after(async () => {
    await f?.down();
    rmSync(dir, { recursive: true, force: true });
  });
  const pod = (h: number, k = STD) => f.hosts[h - 1]!.pods[k]!;

  test('pods ping across hosts, with small frames and with 30000-byte frames', async () => {
    for (const [a, b] of [[1, 2], [1, 3], [2, 3], [3, 1]] as const) assert.ok(await pingUntil(pod(a), podIp(b)), `pod ${a} -> pod ${b}`);
    const big = ping(pod(1, BIG), podIp(2, BIG), ['-s', '30000', '-M', 'do']);
    assert.ok(big.ok, `30000-byte ping: ${big.out}${big.err}`);
    assert.equal(await f.call(1, 'verify'), null, 'the kernel state is complete');
    const st = await f.call(1, 'status', { peer: peerName(2) });
    assert.deepEqual({ overlay: st.overlay, encrypted: st.encrypted, via: st.via }, { overlay: 'sleeve', encrypted: true, via: undefined });
  });

  test('a TCP stream crosses encrypted, counted per peer', async () => {
    const before = (await f.counters(1)).peers[peerName(2)]?.txBytes ?? 0;
    const got = await tcpStream(pod(2, BIG), pod(1, BIG), podIp(2, BIG), 50 * 2 ** 20);
    assert.equal(got, 50 * 2 ** 20, 'every byte arrived');
    const after = (await f.counters(1)).peers[peerName(2)].txBytes;
    assert.ok(after - before >= 50 * 2 ** 20, `host 1 sent ${after - before} bytes to host 2 through the sleeve`);
  });

  test('the underlay carries only sealed sleeve datagrams: no VXLAN, no inner header, no payload', async () => {
    const x = findings(await captureUnderlay(f, dir, 'enc'));
    assert.ok(x.sleeve >= 10, `sleeve datagrams seen: ${x.sleeve}`);
    assert.deepEqual({ vxlan: x.vxlan, notUdp: x.notUdp, pattern: x.pattern, innerHeader: x.innerHeader }, { vxlan: 0, notUdp: 0, pattern: 0, innerHeader: 0 });
  });

  test('replayed and altered datagrams are dropped and counted; nothing reaches the pod', async () => {
    const cap = await Capture.start(f.underlay, 'ub', join(dir, 'replay.pcap'), ['udp', 'and', 'src', 'host', `${UNDERLAY_NET}.1`, 'and', 'dst', 'host', `${UNDERLAY_NET}.2`]);
    const pinged = ping(pod(1), podIp(2), ['-c', '1']).ok;
    const pkts = await cap.stop();
    assert.ok(pinged);
    const d = pkts.find((p) => p.dport === SLEEVE_PORT && p.fragOffset === 0)!;
    assert.ok(d, 'a datagram from host 1 to host 2 was captured');
    const datagram = d.payload.subarray(8);
    const b = await f.counters(2);
    const forward = (x: Buffer, add: number) => {
      const c = Buffer.from(x);
      c.writeUInt32BE(c.readUInt32BE(16) + add, 16); // the counter's low word: a fresh nonce
      return c;
    };
    const flipped = forward(datagram, 2000);
    flipped[flipped.length - 20]! ^= 0x40;
    sendRaw(f.hosts[0]!.ns, `${UNDERLAY_NET}.2`, SLEEVE_PORT, [datagram, forward(datagram, 1000), flipped]);
    await until(async () => {
      const a = await f.counters(2);
      return a.dropped.replay === b.dropped.replay + 1 && a.dropped.auth === b.dropped.auth + 2;
    }, 'one replay and two decryption failures at host 2');
    const a = await f.counters(2);
    assert.equal(a.peers[peerName(1)].rxDatagrams, b.peers[peerName(1)].rxDatagrams, 'none accepted from host 1');
    assert.equal(a.delivered.datagrams, b.delivered.datagrams, 'nothing delivered to host 2\'s kernel');
  });

  test('wrong keys between hosts 1 and 3: nothing is delivered, the probe fails; right keys heal it', async () => {
    await f.call(3, 'keys', { keys: f.wrongKeys(3, 1) });
    try {
      const b = await f.counters(3);
      assert.equal(ping(pod(1), podIp(3)).ok, false);
      const a = await f.counters(3);
      assert.ok(a.dropped['unknown-key'] > b.dropped['unknown-key'], 'refused at host 3');
      assert.equal(a.peers[peerName(1)]?.rxDatagrams, b.peers[peerName(1)]?.rxDatagrams, 'nothing from host 1 accepted');
      assert.equal(a.delivered.datagrams, b.delivered.datagrams, 'nothing delivered');
      assert.equal(await f.call(1, 'probe', { peer: peerName(3) }), false);
    } finally {
      await f.call(3, 'keys', { keys: f.keys[3] });
    }
    assert.ok(await pingUntil(pod(1), podIp(3)));
  });

  test('hosts 1 and 3 blocked on the underlay reach each other through host 2; broadcast is not duplicated; direct again when unblocked', async () => {
    f.block(1, 3, true);
    try {
      assert.equal(ping(pod(1), podIp(3)).ok, false, 'the block holds while routes are direct');
      await f.routes(1, { 3: 2 });
      await f.routes(3, { 1: 2 });
      const before = (await f.counters(2)).relayed.datagrams;
      assert.ok(await pingUntil(pod(1), podIp(3)), 'pod 1 -> pod 3 through host 2');
      assert.ok((await f.counters(2)).relayed.datagrams > before, 'host 2 relayed');
      assert.equal(await f.call(1, 'probe', { peer: peerName(3) }), true, 'full-size probe through host 2');
      assert.equal((await f.call(1, 'status', { peer: peerName(3) })).via, peerName(2));
      assert.equal(await tcpStream(pod(3, BIG), pod(1, BIG), podIp(3, BIG), 20 * 2 ** 20), 20 * 2 ** 20, 'a stream through host 2');
      // an ARP request from pod 1 reaches pods 2 and 3 exactly once each
      pod(1).run('ip', ['neigh', 'flush', 'all']);
      const caps = await Promise.all([2, 3].map((h) => Capture.start(pod(h), 'eth0', join(dir, `arp${h}.pcap`), ['arp'])));
      let seen: number[] = [];
      try {
        assert.ok(ping(pod(1), podIp(3), ['-c', '1']).ok);
      } finally {
        seen = (await Promise.all(caps.map((c) => c.stop().then(() => arpRequests(c.file, podIp(3), podIp(1)))))) as number[];
      }
      assert.deepEqual(seen, [1, 1], 'one copy of the ARP request at each other host');
    } finally {
      f.block(1, 3, false);
      await f.routes(1, { 3: 3 });
      await f.routes(3, { 1: 1 });
    }
    const before = (await f.counters(2)).relayed.datagrams;
    assert.ok(await pingUntil(pod(1), podIp(3)), 'direct again');
    assert.ok(ping(pod(1), podIp(3), ['-c', '3']).ok);
    assert.equal((await f.counters(2)).relayed.datagrams, before, 'host 2 relays nothing once the path is direct');
    assert.equal((await f.call(1, 'status', { peer: peerName(3) })).via, undefined);
  });

  test('rules lost while frames flow: repair restores them, and the flows that passed without them are forgotten, so traffic resumes at once', async () => {
    assert.ok(await pingUntil(pod(1), podIp(2)), 'pod 1 -> pod 2 before');
    const h2 = f.hosts[1]!.ns;
    // without its SNAT rules, host 2 hands host 1's frames to its kernel from 127.0.0.1: the
    // kernel learns host 1's pods there and its answers go nowhere
    h2.run('iptables', ['-t', 'nat', '-F', 'WEFT-SLEEVE-POST']);
    // (flows already under way keep their NAT: end them, as if the rules had never been there)
    h2.tryRun('conntrack', ['-D', '-p', 'udp', '--dport', '6786']);
    assert.equal(ping(pod(1), podIp(2), ['-c', '3', '-W', '1']).ok, false, 'nothing gets through without the rules');
    assert.match(String(await f.call(2, 'verify')), /WEFT-SLEEVE-POST has 0 rules, not 2/, 'verify names the missing rules');
    await f.call(2, 'repair');
    assert.equal(await f.call(2, 'verify'), null, 'repaired');
    // the conntrack flow made without NAT lives 30 s after its last datagram: the repair must
    // end it, or the pings below keep it alive and keep failing
    assert.ok(await pingUntil(pod(1), podIp(2), 5000), 'pod 1 -> pod 2 within 5 s of the repair');
    assert.ok(ping(pod(1), podIp(2), ['-c', '3']).ok, 'and stays up');
  });

  test('a peer left out of program() loses its entry, rules and socket; teardown removes everything', async () => {
    const slots = await f.call(1, 'program', { peers: [{ name: peerName(2), ip: `${UNDERLAY_NET}.2`, reachable: true }] });
    assert.equal(slots.length, 1);
    const h1 = f.hosts[0]!.ns;
    const fdb = h1.run('bridge', ['fdb', 'show', 'dev', 'vxlan-sleeve']);
    assert.equal((fdb.match(/^00:00:00:00:00:00 dst/gm) ?? []).length, 1, fdb);
    assert.doesNotMatch(h1.run('iptables-save', []), new RegExp(peerName(3)));
    assert.equal(ping(pod(1), podIp(3), ['-c', '1', '-W', '1']).ok, false, 'host 3 is no longer carried');
    assert.ok(ping(pod(1), podIp(2)).ok, 'host 2 still is');
    await f.call(1, 'stop');
    assert.match(String(await f.call(1, 'verify')), /sleeve UDP port 6783 is not open/);
    await f.call(1, 'teardown');
    assert.doesNotMatch(h1.run('iptables-save', []), /WEFT-SLEEVE/);
    assert.ok(!h1.links().some((l) => l.ifname === 'vxlan-sleeve' || l.ifname.startsWith('sleeve-via')), 'devices removed');
  });
});

/** ARP requests "who-has `target` tell `sender`" in a capture file. */
function arpRequests(file: string, target: string, sender: string): number {
  const out = spawnSync('tcpdump', ['-n', '-r', file], { encoding: 'utf8' }).stdout ?? '';
  return out.split('\n').filter((l) => l.includes(`Request who-has ${target} tell ${sender}`)).length;
}

describe('sleeve over TCP streams (the default), plain (no secret), three hosts', { skip, concurrency: false }, () => {
  let f: SleeveFixture;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'weft-sleeve-'));
    f = await SleeveFixture.up({ hosts: 3, prefix: 'slvP', encrypted: false });
  });
  after(async () => {
    await f?.down();
    rmSync(dir, { recursive: true, force: true });
  });
  const pod = (h: number) => f.hosts[h - 1]!.pods[STD]!;

  test('plain: pods reach each other, the capture shows the payload (the detector works), status says unencrypted', async () => {
    for (const [a, b] of [[1, 2], [1, 3], [2, 3]] as const) assert.ok(await pingUntil(pod(a), podIp(b)), `pod ${a} -> pod ${b}`);
    const pk = await captureUnderlay(f, dir, 'plain');
    const x = findings(pk);
    assert.ok(x.sleeve + x.stream >= 10, `sleeve datagrams seen: ${JSON.stringify(x)} of ${pk.length} ${JSON.stringify(pk.slice(0, 3).map((p) => [p.src, p.dst, p.proto, p.sport, p.dport]))}`);
    assert.ok(x.pattern > 0 && x.innerHeader > 0, 'plain datagrams carry the frame in clear');
    assert.equal(x.vxlan, 0, 'still no kernel VXLAN on the underlay: the routers carry it');
    assert.equal(x.other, 0, 'nothing but the sleeve between hosts');
    assert.equal((await f.call(1, 'status', { peer: peerName(2) })).encrypted, false);
  });

  test('plain: blocked hosts 1 and 3 reach each other through host 2, and go direct again', async () => {
    f.block(1, 3, true);
    try {
      await f.routes(1, { 3: 2 });
      await f.routes(3, { 1: 2 });
      assert.ok(await pingUntil(pod(1), podIp(3)), 'through host 2');
      assert.ok((await f.counters(2)).relayed.datagrams > 0);
    } finally {
      f.block(1, 3, false);
      await f.routes(1, { 3: 3 });
      await f.routes(3, { 1: 1 });
    }
    const before = (await f.counters(2)).relayed.datagrams;
    assert.ok(ping(pod(1), podIp(3), ['-c', '3']).ok, 'direct');
    assert.equal((await f.counters(2)).relayed.datagrams, before);
  });
});

describe('sleeve over TCP streams (the default), encrypted, three hosts', { skip, concurrency: false }, () => {
  let f: SleeveFixture;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'weft-sleeve-'));
    f = await SleeveFixture.up({ hosts: 3, prefix: 'slvT', encrypted: true, pods: [{ mtu: 1450 }, { mtu: 65000 }] });
  });
  after(async () => {
    await f?.down();
    rmSync(dir, { recursive: true, force: true });
  });
  const pod = (h: number, k = STD) => f.hosts[h - 1]!.pods[k]!;

  test('pods reach each other; a 50 MiB stream and full-size frames cross on the TCP streams', async () => {
    for (const [a, b] of [[1, 2], [1, 3], [2, 3], [3, 1]] as const) assert.ok(await pingUntil(pod(a), podIp(b)), `pod ${a} -> pod ${b}`);
    const big = ping(pod(1, BIG), podIp(2, BIG), ['-s', String(65000 - 28), '-M', 'do']);
    assert.ok(big.ok, `full-size ping: ${big.out}${big.err}`);
    // the stream is dialled on first use, and one that stalled (a loaded machine) is dialled
    // again after a pause, its datagrams over UDP meanwhile: measure once it carries them
    const deadline = Date.now() + 10_000;
    for (;;) {
      const before = (await f.counters(1)).stream.txFrames;
      ping(pod(1, BIG), podIp(2, BIG), ['-c', '1']);
      if ((await f.counters(1)).stream.txFrames > before) break;
      assert.ok(Date.now() < deadline, `host 1's stream to host 2 carried nothing within 10 s: ${JSON.stringify((await f.counters(1)).stream)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const b1 = await f.counters(1);
    const b2 = await f.counters(2);
    assert.equal(await tcpStream(pod(2, BIG), pod(1, BIG), podIp(2, BIG), 50 * 2 ** 20), 50 * 2 ** 20, 'every byte arrived');
    const a1 = await f.counters(1);
    const a2 = await f.counters(2);
    const sent = a1.peers[peerName(2)].txDatagrams - b1.peers[peerName(2)].txDatagrams;
    const streamed = a1.stream.txFrames - b1.stream.txFrames;
    assert.ok(sent > 100 && streamed >= sent * 0.99, `host 1 sent ${streamed} of its ${sent} datagrams to host 2 on the stream`);
    assert.ok(a2.stream.rxFrames - b2.stream.rxFrames >= streamed * 0.99, 'host 2 read them from it');
    assert.deepEqual({ auth: a2.dropped.auth - b2.dropped.auth, replay: a2.dropped.replay - b2.dropped.replay }, { auth: 0, replay: 0 });
    assert.equal(await f.call(1, 'verify'), null);
  });

  test('the underlay carries only the sealed streams: no VXLAN, no inner header, no payload, no plain datagram', async () => {
    const x = findings(await captureUnderlay(f, dir, 'enc-tcp'));
    assert.ok(x.stream >= 10, `stream segments seen: ${JSON.stringify(x)}`);
    assert.deepEqual({ vxlan: x.vxlan, other: x.other, pattern: x.pattern, innerHeader: x.innerHeader }, { vxlan: 0, other: 0, pattern: 0, innerHeader: 0 });
  });

  test('a cut path: frames stuck on the cut stream; traffic follows the routes through host 2; healed, the stuck stream is given up and traffic is direct at once', async () => {
    assert.ok(await pingUntil(pod(1), podIp(3)), 'direct before the cut');
    const stalled = (await f.counters(1)).stream.stalled;
    f.block(1, 3, true);
    try {
      // the route is still direct: these frames wait on host 1's stream to host 3 (TCP retransmits)
      assert.equal(ping(pod(1), podIp(3), ['-c', '2']).ok, false, 'cut');
      await f.routes(1, { 3: 2 });
      await f.routes(3, { 1: 2 });
      assert.ok(await pingUntil(pod(1), podIp(3)), 'through host 2');
      assert.equal(await tcpStream(pod(3, BIG), pod(1, BIG), podIp(3, BIG), 20 * 2 ** 20), 20 * 2 ** 20, 'a stream through host 2');
    } finally {
      f.block(1, 3, false);
      await f.routes(1, { 3: 3 });
      await f.routes(3, { 1: 1 });
    }
    const before = (await f.counters(2)).relayed.datagrams;
    assert.ok(await pingUntil(pod(1), podIp(3), 5000), 'direct again within 5 s');
    assert.ok((await f.counters(1)).stream.stalled > stalled, 'the stream holding frames from the cut was closed as stalled');
    assert.equal(await tcpStream(pod(3, BIG), pod(1, BIG), podIp(3, BIG), 20 * 2 ** 20), 20 * 2 ** 20, 'a stream, direct');
    assert.equal((await f.counters(2)).relayed.datagrams, before, 'nothing through host 2');
  });
});
