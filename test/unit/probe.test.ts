/**
 * Data-path probes over loopback: two Probers, each behind a stand-in for its host's kernel
 * VXLAN (a UDP socket on the host's "underlay" address that strips the VXLAN, Ethernet, IPv4 and
 * UDP headers and hands the payload to the bridge address's probe port, as decapsulation would).
 * A VXLAN probe passes only when VXLAN works both ways: its echo comes back as VXLAN too.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { Prober, PROBE_PORT } from '../../src/datapath/probe';
import { createLogger } from '../../src/common/log';
import { portBase } from '../helpers/ports';

const log = createLogger({ name: 't', level: 'silent' });
const VNI = 6784;
/** VXLAN, inner Ethernet, IPv4 and UDP headers before a probe's payload. */
const HEADERS = 8 + 14 + 20 + 8;

interface Host {
  bridgeIp: string;
  bridgeMac: string;
  underlay: string;
  prober: Prober;
  kernel: Socket;
  /** Drop VXLAN arriving at this host (UDP to its VXLAN port blocked). */
  blocked: boolean;
  /** Datagrams its kernel decapsulated: [inner source, inner destination, destination MAC]. */
  seen: string[][];
}

const ip = (b: Buffer, at: number) => [...b.subarray(at, at + 4)].join('.');
const macOf = (b: Buffer, at: number) => [...b.subarray(at, at + 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');

async function host(n: number, port: number, others: () => Host[]): Promise<Host> {
  const h = { bridgeIp: `127.0.0.${n}`, bridgeMac: `02:00:00:00:00:0${n}`, underlay: `127.0.1.${n}`, blocked: false, seen: [] as string[][] } as Host;
  h.prober = new Prober({
    log,
    mac: `02:00:00:00:ff:0${n}`,
    peer: (gw) => {
      const o = others().find((x) => x.bridgeIp === gw);
      return o && { ip: o.underlay, bridgeMac: o.bridgeMac };
    },
  });
  await h.prober.listen(h.bridgeIp);
  h.kernel = createSocket('udp4');
  h.kernel.on('message', (d) => {
    if (h.blocked || d.length < HEADERS) return;
    const src = ip(d, 8 + 14 + 12);
    const dst = ip(d, 8 + 14 + 16);
    h.seen.push([src, dst, macOf(d, 8)]);
    // decapsulated: the inner datagram reaches the bridge address's probe port, from the inner source
    const from = createSocket('udp4');
    from.bind(0, src, () => from.send(d.subarray(HEADERS), PROBE_PORT, dst, () => from.close()));
  });
  await new Promise<void>((r) => h.kernel.bind(port, h.underlay, () => r()));
  return h;
}

test('a VXLAN probe is echoed as VXLAN to the prober\'s host: it fails when VXLAN is blocked either way, passes when both work', async () => {
  const port = portBase(1);
  const hosts: Host[] = [];
  const others = (me: () => Host) => () => hosts.filter((x) => x !== me());
  let a!: Host;
  let b!: Host;
  a = await host(2, port, others(() => a));
  b = await host(3, port, others(() => b));
  hosts.push(a, b);
  const toB = { ip: b.underlay, bridgeMac: b.bridgeMac, gateway: b.bridgeIp };
  try {
    assert.equal(await a.prober.probeVxlan(toB, VNI, port, 1400, 500), true, 'both ways open');
    assert.deepEqual(b.seen[0], [a.bridgeIp, b.bridgeIp, b.bridgeMac], 'the request reached host b by VXLAN, to its bridge');
    assert.deepEqual(a.seen[0], [b.bridgeIp, a.bridgeIp, a.bridgeMac], 'the echo came back by VXLAN, to a\'s bridge MAC');
    a.blocked = true;
    assert.equal(await a.prober.probeVxlan(toB, VNI, port, 1400, 300), false, 'VXLAN blocked into a: the echo is lost, although a plain echo would pass');
    a.blocked = false;
    b.blocked = true;
    assert.equal(await a.prober.probeVxlan(toB, VNI, port, 1400, 300), false, 'VXLAN blocked into b');
    b.blocked = false;
    assert.equal(await a.prober.probeVxlan(toB, VNI, port, 1400, 500), true, 'open again');
    // a sender not known yet (start-up) gets a plain echo through the bridge, not none
    hosts.splice(0, 1);
    const before = a.seen.length;
    a.blocked = true;
    assert.equal(await a.prober.probeVxlan(toB, VNI, port, 1400, 500), true, 'b knows no peer behind a\'s bridge address: a plain echo');
    assert.equal(a.seen.length, before, 'not by VXLAN');
  } finally {
    for (const h of [a, b]) {
      await h.prober.stop();
      h.kernel.close();
    }
  }
});
