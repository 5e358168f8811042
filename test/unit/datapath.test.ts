/** The data path's logic against fakes of the sys layer: FDB planning, the VXLAN overlay, underlay discovery. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createLogger } from '../../src/common/log';
import { ConfigError } from '../../src/common/errors';
import { parseCidr } from '../../src/common/ip';
import { fdbGraceRunning, newFdbMemory, planFdb, ZERO_MAC } from '../../src/datapath/fdb';
import { FastDp, VXLAN_DEV, VXLAN_FILTER_CHAIN, VXLAN_VNI } from '../../src/datapath/fastdp';
import type { ChainSpec } from '../../src/sys/iptables';
import { DataPath } from '../../src/datapath/datapath';
import { discoverUnderlay, UnderlayFinder, type UnderlaySys } from '../../src/datapath/underlay';
import type { OverlayPeer, Underlay } from '../../src/datapath/overlay';
import type { FdbEntry, VxlanSys } from '../../src/sys/vxlan';
import type { LinkInfo } from '../../src/sys/link';

const log = createLogger({ name: 't', level: 'silent' });
const GRACE = 60_000;
const peer = (n: number, o: Partial<OverlayPeer> = {}): OverlayPeer => ({ name: `p${n}`, ip: `172.30.0.${10 + n}`, bridgeMac: `02:00:00:00:00:0${n}`, reachable: true, ...o });

/** Applies `bridge -batch` lines to a table, as the kernel would. */
function apply(table: FdbEntry[], lines: string[]): void {
  for (const l of lines) {
    const [, op, mac, , , , dst] = l.split(' ');
    if (op === 'append') table.push({ mac: mac!, dst });
    else if (op === 'replace') {
      const i = table.findIndex((e) => e.mac === mac);
      if (i >= 0) table.splice(i, 1);
      table.push({ mac: mac!, dst });
    } else if (op === 'del' && dst !== undefined) {
      // `fdb del MAC dev D master` is the bridge's learnt entry, not the device's table
      const i = table.findIndex((e) => e.mac === mac && e.dst === dst);
      if (i >= 0) table.splice(i, 1);
    }
  }
}

test('FDB: reachable peers get a flooding entry and one for their bridge MAC; a second pass changes nothing', () => {
  const mem = newFdbMemory(0);
  const table: FdbEntry[] = [];
  const p = planFdb(VXLAN_DEV, table, [peer(1), peer(2)], mem, 1, GRACE);
  assert.equal(p.added, 4);
  apply(table, p.lines);
  assert.deepEqual(
    table.map((e) => `${e.mac} ${e.dst}`).sort(),
    [`${ZERO_MAC} 172.30.0.11`, `${ZERO_MAC} 172.30.0.12`, '02:00:00:00:00:01 172.30.0.11', '02:00:00:00:00:02 172.30.0.12'].sort(),
  );
  assert.deepEqual(planFdb(VXLAN_DEV, table, [peer(1), peer(2)], mem, 2, GRACE).lines, []);
});

test('FDB: an unreachable peer keeps its entries for the grace period, then loses them', () => {
  const mem = newFdbMemory(0);
  const table: FdbEntry[] = [];
  apply(table, planFdb(VXLAN_DEV, table, [peer(1)], mem, 0, GRACE).lines);
  assert.equal(fdbGraceRunning(mem, 0, GRACE), false, 'nothing falls due while every peer is reachable');
  assert.deepEqual(planFdb(VXLAN_DEV, table, [peer(1, { reachable: false })], mem, 1000, GRACE).lines, [], 'kept while within the grace');
  assert.equal(fdbGraceRunning(mem, 1000 + GRACE, GRACE), true, 'the removal falls due with time: look again soon');
  const late = planFdb(VXLAN_DEV, table, [peer(1, { reachable: false })], mem, 1000 + GRACE + 1, GRACE);
  assert.equal(late.removed, 2);
  assert.equal(fdbGraceRunning(mem, 1000 + GRACE + 1, GRACE), false, 'a peer gone for good past its grace keeps nobody busy');
  apply(table, late.lines);
  assert.deepEqual(table, []);
  // back again: entries return
  assert.equal(planFdb(VXLAN_DEV, table, [peer(1)], mem, 2000 + GRACE, GRACE).added, 2);
});

test('FDB: a peer no longer listed (removed, or moved to another overlay) loses its entries at once', () => {
  const mem = newFdbMemory(0);
  const table: FdbEntry[] = [];
  apply(table, planFdb(VXLAN_DEV, table, [peer(1), peer(2)], mem, 0, GRACE).lines);
  const p = planFdb(VXLAN_DEV, table, [peer(1)], mem, 10, GRACE);
  assert.equal(p.removed, 2);
  apply(table, p.lines);
  assert.ok(table.every((e) => e.dst === '172.30.0.11'));
});

test('FDB: entries found at start are adopted for the grace period (a restart drops no traffic), then cleared', () => {
  const table: FdbEntry[] = [{ mac: ZERO_MAC, dst: '172.30.0.99' }];
  const mem = newFdbMemory(0);
  assert.deepEqual(planFdb(VXLAN_DEV, table, [], mem, 1000, GRACE).lines, [], 'unknown, but the grace since start is not over');
  assert.equal(planFdb(VXLAN_DEV, table, [], mem, GRACE + 1, GRACE).removed, 1);
});

test("FDB: destinations another overlay owns are never touched", () => {
  const table: FdbEntry[] = [{ mac: ZERO_MAC, dst: '169.254.10.2' }];
  const mem = newFdbMemory(0);
  assert.deepEqual(planFdb(VXLAN_DEV, table, [], mem, GRACE * 10, GRACE, (d) => !d.startsWith('169.254.')).lines, []);
});

test('FDB: the flooding entry uses the all-zero MAC', () => {
  assert.match(ZERO_MAC, /^00(:00){5}$/);
  const p = planFdb(VXLAN_DEV, [], [peer(1)], newFdbMemory(0), 0, GRACE);
  assert.ok(p.lines.some((l) => l.startsWith(`fdb append ${ZERO_MAC} `) && l.includes(` dst ${peer(1).ip} `)));
});

test('FDB: an entry counts as present only with both its MAC and its destination', () => {
  const a = peer(1);
  const b = peer(2);
  // the zero MAC towards another host, and a's bridge MAC towards another host
  const table: FdbEntry[] = [
    { mac: ZERO_MAC, dst: b.ip },
    { mac: a.bridgeMac!, dst: b.ip },
  ];
  const p = planFdb(VXLAN_DEV, table, [a], newFdbMemory(0), 0, GRACE);
  assert.equal(p.added, 2);
  assert.ok(p.lines.some((l) => l.startsWith(`fdb append ${ZERO_MAC} `) && l.includes(` dst ${a.ip} `)));
  assert.ok(p.lines.some((l) => l.startsWith(`fdb replace ${a.bridgeMac} `) && l.includes(` dst ${a.ip} `)));
});

test('FDB: an unreachable peer is kept up to exactly its grace, and dropped just after', () => {
  const mem = newFdbMemory(5000);
  const table: FdbEntry[] = [];
  apply(table, planFdb(VXLAN_DEV, table, [peer(1), peer(2)], mem, 5000, GRACE).lines);
  const down = [peer(1, { reachable: false }), peer(2)];
  assert.deepEqual(planFdb(VXLAN_DEV, table, down, mem, 7000, GRACE).lines, [], 'unreachable since 7000');
  assert.deepEqual(planFdb(VXLAN_DEV, table, down, mem, 7000 + GRACE, GRACE).lines, [], 'at the grace exactly');
  const late = planFdb(VXLAN_DEV, table, down, mem, 7001 + GRACE, GRACE);
  assert.equal(late.removed, 2);
  assert.ok(late.lines.filter((l) => l.includes(' dst ')).every((l) => l.includes(` dst ${peer(1).ip} `)), 'only the unreachable peer loses entries');
});

test('FDB: entries found at start are adopted up to exactly the grace since start', () => {
  const table: FdbEntry[] = [{ mac: ZERO_MAC, dst: '172.30.0.99' }];
  const mem = newFdbMemory(3000);
  assert.deepEqual(planFdb(VXLAN_DEV, table, [], mem, 3000 + GRACE, GRACE).lines, []);
  assert.equal(planFdb(VXLAN_DEV, table, [], mem, 3001 + GRACE, GRACE).removed, 1);
});

test('FDB: a peer no longer listed is forgotten (its reappearing entry is adopted again within the start grace)', () => {
  const mem = newFdbMemory(0);
  const table: FdbEntry[] = [];
  apply(table, planFdb(VXLAN_DEV, table, [peer(1), peer(2)], mem, 0, GRACE).lines);
  const gone = planFdb(VXLAN_DEV, table, [peer(2)], mem, 10, GRACE);
  assert.equal(gone.removed, 2, 'a peer listed before and not now loses its entries at once');
  apply(table, gone.lines);
  // another agent puts an entry towards the old address back: unknown to us now, so adopted
  table.push({ mac: ZERO_MAC, dst: peer(1).ip });
  assert.deepEqual(planFdb(VXLAN_DEV, table, [peer(2)], mem, 20, GRACE).lines, []);
});

test('FDB: an unreachable peer that left and came back gets a fresh grace', () => {
  const mem = newFdbMemory(0);
  const table: FdbEntry[] = [];
  apply(table, planFdb(VXLAN_DEV, table, [peer(1), peer(2)], mem, 0, GRACE).lines);
  planFdb(VXLAN_DEV, table, [peer(1, { reachable: false }), peer(2)], mem, 10, GRACE);
  apply(table, planFdb(VXLAN_DEV, table, [peer(2)], mem, 20, GRACE).lines);
  const back = [peer(1, { reachable: false }), peer(2)];
  const t = 30 + GRACE;
  const p = planFdb(VXLAN_DEV, table, back, mem, t, GRACE);
  assert.equal(p.added, 2, 'listed again, unreachable only since now: within its grace');
  apply(table, p.lines);
  assert.deepEqual(planFdb(VXLAN_DEV, table, back, mem, t + GRACE, GRACE).lines, []);
  assert.equal(planFdb(VXLAN_DEV, table, back, mem, t + GRACE + 1, GRACE).removed, 2);
});

test('FDB: the exact lines: a flooding entry appended, a bridge MAC replaced; a removal deletes the device entry and, for a bridge MAC, the bridge\'s learnt one', () => {
  const mem = newFdbMemory(0);
  const table: FdbEntry[] = [];
  const a = peer(1);
  const add = planFdb(VXLAN_DEV, table, [a], mem, 0, GRACE);
  assert.deepEqual(add.lines, [`fdb append ${ZERO_MAC} dev ${VXLAN_DEV} dst ${a.ip} self permanent`, `fdb replace ${a.bridgeMac} dev ${VXLAN_DEV} dst ${a.ip} self permanent`]);
  apply(table, add.lines);
  const del = planFdb(VXLAN_DEV, table, [], mem, 1, GRACE);
  assert.deepEqual(del.lines, [
    `fdb del ${ZERO_MAC} dev ${VXLAN_DEV} dst ${a.ip} self`,
    `fdb del ${a.bridgeMac} dev ${VXLAN_DEV} dst ${a.ip} self`,
    `fdb del ${a.bridgeMac} dev ${VXLAN_DEV} master`,
  ]);
  assert.deepEqual({ added: del.added, removed: del.removed }, { added: 0, removed: 2 });
});

test('FDB: a flooding entry towards a peer does not stand for its bridge MAC entry, nor the other way round', () => {
  const a = peer(1);
  const onlyFlood = planFdb(VXLAN_DEV, [{ mac: ZERO_MAC, dst: a.ip }], [a], newFdbMemory(0), 0, GRACE);
  assert.deepEqual(onlyFlood.lines, [`fdb replace ${a.bridgeMac} dev ${VXLAN_DEV} dst ${a.ip} self permanent`]);
  const onlyMac = planFdb(VXLAN_DEV, [{ mac: a.bridgeMac!, dst: a.ip }], [a], newFdbMemory(0), 0, GRACE);
  assert.deepEqual(onlyMac.lines, [`fdb append ${ZERO_MAC} dev ${VXLAN_DEV} dst ${a.ip} self permanent`]);
});

test('FDB: a peer that has published no bridge MAC gets the flooding entry only', () => {
  const a = peer(1, { bridgeMac: undefined });
  const p = planFdb(VXLAN_DEV, [], [a], newFdbMemory(0), 0, GRACE);
  assert.deepEqual(p.lines, [`fdb append ${ZERO_MAC} dev ${VXLAN_DEV} dst ${a.ip} self permanent`]);
  assert.equal(p.added, 1);
});

test('FDB: an entry without a destination (the device\'s own, not a tunnel) is never removed', () => {
  const table: FdbEntry[] = [{ mac: '02:00:00:00:00:99' }, { mac: ZERO_MAC, dst: '172.30.0.99' }];
  const p = planFdb(VXLAN_DEV, table, [], newFdbMemory(0), GRACE + 1, GRACE);
  assert.deepEqual(p.lines, [`fdb del ${ZERO_MAC} dev ${VXLAN_DEV} dst 172.30.0.99 self`]);
});

/** A VXLAN sys fake recording calls and holding one device and its table. */
function fakeSys(initial?: Partial<LinkInfo>) {
  const calls: string[] = [];
  let link: LinkInfo | undefined = initial ? ({ ifname: VXLAN_DEV, address: '', mtu: 1450, operstate: 'UP', flags: ['UP'], ...initial } as LinkInfo) : undefined;
  const table: FdbEntry[] = [];
  const sys: VxlanSys = {
    getLink: async () => link,
    create: async (s) => {
      calls.push(`create ${s.name} local ${s.local} dev ${s.dev}`);
      link = { ifname: s.name, address: '', mtu: 1500, operstate: 'DOWN', flags: [], linkinfo: { info_kind: 'vxlan', info_data: { id: s.vni, port: s.port, local: s.local } } } as unknown as LinkInfo;
    },
    remove: async (n) => {
      calls.push(`remove ${n}`);
      link = undefined;
    },
    attach: async (n, mtu, br) => {
      calls.push(`attach ${n} mtu ${mtu} ${br}`);
      link = { ...link!, mtu, master: br, flags: ['UP'] };
    },
    listFdb: async () => [...table],
    applyFdb: async (lines) => apply(table, [...lines]),
  };
  return { sys, calls, table, link: () => link };
}

const underlay: Underlay = { iface: 'eth0', ip: '172.30.0.11', mtu: 9000, how: 'default route' };

test('fastdp: creates the device on the underlay, attaches it to the bridge at the pod MTU, programs peers', async () => {
  const f = fakeSys();
  const dp = new FastDp({ bridge: 'weave', underlay, podMtu: () => 8950, prober: { probe: async () => true }, log, sys: f.sys }, { graceMs: GRACE });
  assert.equal(dp.podMtu(underlay), 8950, 'underlay less VXLAN overhead');
  assert.match((await dp.verify())!, /missing/);
  await dp.start();
  assert.deepEqual(f.calls, [`create ${VXLAN_DEV} local 172.30.0.11 dev eth0`, `attach ${VXLAN_DEV} mtu 8950 weave`]);
  assert.equal(await dp.verify(), undefined);
  await dp.program([peer(2)]);
  assert.equal(f.table.length, 2);
  assert.equal(await dp.probe(peer(2)), false, 'no gateway published: nothing to probe');
  assert.equal(await dp.probe(peer(2, { gateway: '10.40.0.1' })), true);
});

test('fastdp: probes with its own VXLAN datagram even while the forwarding table leads to the peer', async () => {
  // the forwarding-table probe leaves by the port the bridge learnt the peer's MAC on (the
  // sleeve's device after a move), so it passes while UDP 6784 is blocked: it must not decide
  const used: string[] = [];
  const prober = {
    probe: async () => (used.push('table'), true),
    probeVxlan: async (p: OverlayPeer, vni: number, port: number, mtu: number) => (used.push(`vxlan ${p.name} ${vni} ${port} ${mtu}`), false),
  };
  const dp = new FastDp({ bridge: 'weave', underlay, podMtu: () => 8950, prober, log, sys: fakeSys().sys }, { graceMs: GRACE });
  await dp.start();
  await dp.program([peer(2)]);
  assert.equal(await dp.probe(peer(2, { gateway: '10.40.0.1' })), false, 'VXLAN blocked: the probe fails although the table path answers');
  assert.deepEqual(used, [`vxlan p2 ${VXLAN_VNI} 6784 8950`]);
  assert.equal(await dp.probe(peer(2, { gateway: '10.40.0.1', bridgeMac: undefined })), true, 'no bridge MAC known: only the table path can be probed');
  assert.deepEqual(used.slice(1), ['table']);
});

test('fastdp: with trusted subnets UDP 6784 accepts only them (made, verified, repaired); without, a stale filter is removed', async () => {
  const chains = new Map<string, { hooked: boolean; rules: string[] }>();
  const calls: string[] = [];
  const iptables = {
    apply: async (specs: readonly ChainSpec[]) => specs.forEach((c) => (calls.push(`apply ${c.chain}`), chains.set(c.chain, { hooked: true, rules: [...c.rules] }))),
    remove: async (specs: readonly ChainSpec[]) => specs.forEach((c) => (calls.push(`remove ${c.chain}`), chains.delete(c.chain))),
    missingJumps: async (specs: readonly ChainSpec[]) => specs.filter((c) => !chains.get(c.chain)?.hooked).map((c) => `${c.table}/${c.chain}`),
    rules: async (_t: string, chain: string) => (chains.get(chain)?.rules ?? []).map((r) => `-A ${chain} ${r}`),
  };
  const f = fakeSys();
  const dp = new FastDp({ bridge: 'weave', underlay, podMtu: () => 8950, prober: { probe: async () => true }, log, sys: f.sys, iptables }, { graceMs: GRACE, acceptFrom: ['172.30.0.0/24', '10.1.2.3/32'] });
  await dp.start();
  assert.deepEqual(chains.get(VXLAN_FILTER_CHAIN)?.rules, [
    '-s 172.30.0.0/24 -p udp -m udp --dport 6784 -j RETURN',
    '-s 10.1.2.3/32 -p udp -m udp --dport 6784 -j RETURN',
    '-p udp -m udp --dport 6784 -j DROP',
  ]);
  assert.equal(await dp.verify(), undefined);
  chains.get(VXLAN_FILTER_CHAIN)!.rules.shift();
  assert.match((await dp.verify())!, /WEFT-VXLAN-IN does not hold the trusted subnets' rules/);
  chains.get(VXLAN_FILTER_CHAIN)!.hooked = false;
  assert.match((await dp.verify())!, /WEFT-VXLAN-IN is not hooked into INPUT/);
  await dp.repair();
  assert.equal(await dp.verify(), undefined, 'repair puts the filter back');
  // the next router runs without trusted subnets: the filter goes, and verify asks for none
  const plain = new FastDp({ bridge: 'weave', underlay, podMtu: () => 8950, prober: { probe: async () => true }, log, sys: f.sys, iptables }, { graceMs: GRACE });
  await plain.start();
  assert.equal(chains.has(VXLAN_FILTER_CHAIN), false);
  assert.equal(await plain.verify(), undefined);
  assert.deepEqual(calls, ['apply WEFT-VXLAN-IN', 'apply WEFT-VXLAN-IN', 'remove WEFT-VXLAN-IN']);
});

test('fastdp: a device with other settings is recreated; one that fits is adopted as it is', async () => {
  const stale = fakeSys({ linkinfo: { info_kind: 'vxlan', info_data: { id: 6784, port: 6784, local: '10.9.9.9' } } as LinkInfo['linkinfo'], master: 'weave' });
  await new FastDp({ bridge: 'weave', underlay, podMtu: () => 8950, prober: { probe: async () => true }, log, sys: stale.sys }, { graceMs: GRACE }).start();
  assert.deepEqual(stale.calls.slice(0, 2), [`remove ${VXLAN_DEV}`, `create ${VXLAN_DEV} local 172.30.0.11 dev eth0`]);
  const fits = fakeSys({ linkinfo: { info_kind: 'vxlan', info_data: { id: 6784, port: 6784, local: '172.30.0.11' } } as LinkInfo['linkinfo'], master: 'weave' });
  await new FastDp({ bridge: 'weave', underlay, podMtu: () => 8950, prober: { probe: async () => true }, log, sys: fits.sys }, { graceMs: GRACE }).start();
  assert.deepEqual(fits.calls, [`attach ${VXLAN_DEV} mtu 8950 weave`]);
});

/** An underlay sys fake. */
function usys(o: { ifaces?: { ifname: string; mtu?: number; addrs: string[] }[]; dflt?: string; routes?: Record<string, { dev: string; src?: string }>; names?: Record<string, string> } = {}): UnderlaySys {
  return {
    interfaces: async () => (o.ifaces ?? []).map((i) => ({ ifname: i.ifname, mtu: i.mtu ?? 1500, flags: ['UP'], addrs: i.addrs })),
    defaultRouteDev: async () => o.dflt,
    routeGet: async (ip) => o.routes?.[ip],
    resolve: async (h) => (/^\d+\.\d+\.\d+\.\d+$/.test(h) ? h : o.names?.[h]),
  };
}
const ifaces = [
  { ifname: 'lo', addrs: ['127.0.0.1'], mtu: 65536 },
  { ifname: 'eth0', addrs: ['192.168.1.5'], mtu: 1500 },
  { ifname: 'ens7', addrs: ['10.1.0.5', '10.1.0.6'], mtu: 9000 },
  { ifname: 'weave', addrs: ['10.32.0.1'], mtu: 1450 },
];
const none = () => false;
const own = (n: string) => n === 'weave';

test('underlay: each option finds its interface; the first option given wins', async () => {
  const sys = usys({ ifaces, dflt: 'eth0', routes: { '10.1.0.200': { dev: 'ens7', src: '10.1.0.6' } } });
  assert.deepEqual(await discoverUnderlay({ peers: [], ownDevices: own, advertiseAddr: '10.1.0.6' }, sys), { underlay: { iface: 'ens7', ip: '10.1.0.6', mtu: 9000, how: 'advertise-addr' } });
  assert.deepEqual(await discoverUnderlay({ peers: [], ownDevices: own, iface: 'ens7' }, sys), { underlay: { iface: 'ens7', ip: '10.1.0.5', mtu: 9000, how: 'iface' } });
  assert.deepEqual(await discoverUnderlay({ peers: [], ownDevices: own, iface: 'en.*' }, sys), { underlay: { iface: 'ens7', ip: '10.1.0.5', mtu: 9000, how: 'iface' } }, 'a regular expression over names');
  assert.deepEqual(await discoverUnderlay({ peers: [], ownDevices: own, ifaceCanReach: '10.1.0.200' }, sys), { underlay: { iface: 'ens7', ip: '10.1.0.6', mtu: 9000, how: 'iface-can-reach' } });
  assert.deepEqual(await discoverUnderlay({ peers: [], ownDevices: own }, sys), { underlay: { iface: 'eth0', ip: '192.168.1.5', mtu: 1500, how: 'default route' } });
});

test('underlay: without a default route, the route towards the peers (names resolved) decides', async () => {
  const sys = usys({ ifaces, routes: { '10.1.0.9': { dev: 'ens7', src: '10.1.0.5' } }, names: { node2: '10.1.0.9' } });
  assert.deepEqual(await discoverUnderlay({ peers: ['unknown-host', 'node2:6783'], ownDevices: own }, sys), { underlay: { iface: 'ens7', ip: '10.1.0.5', mtu: 9000, how: 'route to peers' } });
  const d = await discoverUnderlay({ peers: ['10.9.9.9'], ownDevices: own }, sys);
  assert.match('reason' in d ? d.reason : '', /no default route and no route to the peers \(10\.9\.9\.9\)/);
});

test('underlay: an explicit option that finds nothing is an error naming the flag; weft\'s own devices are never the underlay', async () => {
  const sys = usys({ ifaces, dflt: 'weave' });
  await assert.rejects(discoverUnderlay({ peers: [], ownDevices: own, advertiseAddr: '10.32.0.1' }, sys), (e) => e instanceof ConfigError && e.field === '--advertise-addr');
  await assert.rejects(discoverUnderlay({ peers: [], ownDevices: own, iface: 'wlan.*' }, sys), (e) => e instanceof ConfigError && e.field === '--iface');
  await assert.rejects(discoverUnderlay({ peers: [], ownDevices: own, ifaceCanReach: '8.8.8.8' }, sys), (e) => e instanceof ConfigError && e.field === '--iface-can-reach');
  const d = await discoverUnderlay({ peers: [], ownDevices: own }, sys);
  assert.ok('reason' in d, 'the bridge holding the default route is not an underlay');
  void none;
});

test('underlay finder: nothing at start, then learnt from the address a peer reached this host at', async () => {
  const sys = usys({ ifaces });
  const f = new UnderlayFinder({ log, sys, peers: () => [] }, { ownDevices: own, retryMs: 60_000 });
  const found: Underlay[] = [];
  f.events.on('found', (u) => found.push(u));
  await f.start();
  assert.equal(f.underlay, undefined);
  assert.match(f.reason, /no default route and no peers/);
  await f.learn('::ffff:10.32.0.1');
  assert.equal(f.underlay, undefined, "weft's own bridge address teaches nothing");
  await f.learn('::ffff:10.1.0.6');
  assert.deepEqual(found, [{ iface: 'ens7', ip: '10.1.0.6', mtu: 9000, how: 'address a peer reached' }]);
  await f.stop();
});

/** An overlay that records what it is asked to carry; its probe answers from `ok`. */
function fakeOverlay(name: string, encrypted = false) {
  const ov = {
    name,
    encrypted,
    carried: [] as string[],
    ok: new Map<string, boolean>(),
    podMtu: () => 1450,
    start: async () => undefined,
    stop: async () => undefined,
    program: async (ps: readonly OverlayPeer[]) => void (ov.carried = ps.map((p) => p.name).sort()),
    probe: async (p: OverlayPeer) => ov.ok.get(p.name) ?? true,
    verify: async () => undefined,
    repair: async () => undefined,
  };
  return ov;
}

test('overlay choice without a secret: kernel VXLAN while its probe passes, even for a peer the mesh reaches only through another; the sleeve when it fails two rounds in a row, and back; an unreachable router forgets the verdict', async () => {
  const fast = fakeOverlay('fastdp');
  const sleeve = fakeOverlay('sleeve');
  let hop = 'p2'; // the mesh reaches p1 through p2 for now (as while a router restarts)
  let p1Reachable = true;
  const dp = new DataPath(
    {
      self: 'me',
      mesh: {
        peers: () => [1, 2].map((n) => ({ name: `p${n}`, nickname: `p${n}`, uid: '', reachable: n === 2 || p1Reachable, conns: [], meta: { underlay: `172.30.0.${10 + n}`, bridgeMac: `02:00:00:00:00:0${n}`, gateway: `10.32.${n}.1` } }) as any),
        nextHop: (p) => (p === 'p1' ? hop : p),
      },
      overlays: () => [fast, sleeve] as any,
      log,
    },
    { programMs: 60_000, probeMs: 60_000 },
  );
  const settle = async () => {
    await (dp as any).probeAll();
    dp.schedule();
    await (dp as any).programming;
  };
  await dp.useUnderlay({ ip: '172.30.0.10', iface: 'eth0', mtu: 1500, how: 'test' } as any);
  await settle();
  assert.deepEqual(fast.carried, ['p1', 'p2'], 'kernel VXLAN needs no router on the way: a peer reached through another stays on it');
  assert.deepEqual(sleeve.carried, []);
  fast.ok.set('p1', false);
  await settle();
  assert.deepEqual(fast.carried, ['p1', 'p2'], 'one failed round (a loaded host) moves nothing');
  fast.ok.set('p1', true);
  await settle();
  fast.ok.set('p1', false);
  await settle();
  assert.deepEqual(fast.carried, ['p1', 'p2'], 'a pass in between starts the count again');
  await settle();
  assert.deepEqual(fast.carried, ['p2']);
  assert.deepEqual(sleeve.carried, ['p1'], 'two failed rounds in a row: the sleeve carries it (through p2, as the mesh routes)');
  assert.equal(dp.peerStatus('p1')?.via, 'p2');
  fast.ok.set('p1', true);
  hop = 'p1';
  await settle();
  assert.deepEqual(fast.carried, ['p1', 'p2'], 'back on kernel VXLAN once its probe passes');
  assert.deepEqual(sleeve.carried, []);
  // p1's router dies: its probes fail, but it is unreachable, so nothing moves; the old verdict
  // is forgotten, so when it is back a first failed round does not move it either
  fast.ok.set('p1', false);
  await settle();
  p1Reachable = false;
  await settle();
  await settle();
  assert.deepEqual(fast.carried, ['p1', 'p2'], 'an unreachable router: kernel VXLAN, which needs none, keeps carrying its pods');
  p1Reachable = true;
  await settle();
  assert.deepEqual(fast.carried, ['p1', 'p2'], 'back: judged afresh');
  await settle();
  assert.deepEqual(sleeve.carried, ['p1'], 'and moved only after two failed rounds of its own');
  await dp.stop();
});

test('overlay choice with a secret and trusted subnets: kernel VXLAN only when both ends are inside them', async () => {
  const run = async (ownIp: string) => {
    const fast = fakeOverlay('fastdp');
    const sleeve = fakeOverlay('sleeve', true);
    const dp = new DataPath(
      {
        self: 'me',
        mesh: {
          peers: () => ['172.30.0.11', '10.9.0.12'].map((ip, k) => ({ name: `p${k + 1}`, nickname: `p${k + 1}`, uid: '', reachable: true, conns: [], meta: { underlay: ip, bridgeMac: `02:00:00:00:00:0${k + 1}`, gateway: `10.32.${k + 1}.1` } }) as any),
          nextHop: (p) => p,
        },
        overlays: () => [fast, sleeve] as any,
        log,
      },
      { programMs: 60_000, probeMs: 60_000, encrypted: true, trusted: [parseCidr('172.30.0.0/24')!] },
    );
    await dp.useUnderlay({ ip: ownIp, iface: 'eth0', mtu: 1500, how: 'test' } as any);
    await (dp as any).probeAll();
    dp.schedule();
    await (dp as any).programming;
    await dp.stop();
    return { fast: fast.carried, sleeve: sleeve.carried };
  };
  assert.deepEqual(await run('172.30.0.10'), { fast: ['p1'], sleeve: ['p2'] }, 'inside: the trusted peer on kernel VXLAN, the other sealed');
  assert.deepEqual(await run('10.9.0.10'), { fast: [], sleeve: ['p1', 'p2'] }, 'outside: everything sealed, as the trusted peer (seeing this address) does towards it');
});
