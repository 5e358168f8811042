/**
 * Encryption and multi-hop through real routers (issue 8): host namespaces on an underlay
 * bridge, `dist/weft router` in each, pods attached with `dist/weft-net`. With a password pods
 * ping and stream across hosts and the underlay shows nothing readable; a router with another
 * password, or none, is refused and says why; hosts 1 and 3 cut off from each other reach each
 * other through host 2 (with and without a password) and go direct again when the cut heals;
 * without a password a peer whose VXLAN is blocked moves to the sleeve and back.
 */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cni, cniEnv, netConf, Netns, RouterProc, scope, underlayHosts, until, weftCli } from '../helpers/netns';
import { needs } from '../helpers/needs';
import { Capture, type Ipv4Packet } from '../helpers/pcap';
import { tcpStream } from '../helpers/stream';

const skip = needs({ root: true, built: true, tools: ['ip', 'tcpdump', 'nft', 'nsenter', 'bridge', 'ping', 'iptables', 'conntrack'] });
const FAST = { WEFT_HEARTBEAT_MS: '1000', WEFT_RETRY_MIN_MS: '200', WEFT_RETRY_MAX_MS: '1000', WEFT_PROBE_MS: '1000', WEFT_PROGRAM_MS: '500', WEFT_HANDSHAKE_MS: '2000' };
/** 16 bytes ping repeats through its payload. */
const PATTERN = 'deadbeefcafef00d5eed1e55c0ffee42';

interface Host {
  ns: Netns;
  r: RouterProc;
  pod: Netns;
  ip: string;
}

/** Starts routers on `hs` (each given the others as peers) and one pod per host. */
async function cluster(hs: Netns[], net: string, dir: string, track: <T extends { destroy(): unknown }>(x: T) => T, args: (i: number) => string[]): Promise<Host[]> {
  const n = hs.length;
  const rs = hs.map((h, k) => {
    const i = k + 1;
    const peers = Array.from({ length: n }, (_, j) => `${net}.${j + 1}`).filter((_, j) => j !== k);
    const r = track(new RouterProc(h, ['--nickname', `h${i}`, '--peers', peers.join(','), '--ipalloc-init', `consensus=${n}`, ...args(i)], join(dir, `r${i}`), false));
    r.env = FAST;
    return r;
  });
  await Promise.all(rs.map((r) => r.start()));
  assert.ok(await until(() => rs.every((r) => r.report().ipam.status === 'ready'), 30_000), 'IPAM ready everywhere');
  const out: Host[] = [];
  for (const [k, r] of rs.entries()) {
    const pod = track(Netns.create(`wrs${k + 1}p`));
    const res = cni(hs[k], cniEnv('ADD', `rs-${pod.name}`, pod.path), netConf(r.socket));
    assert.equal(res.code, 0, `pod on host ${k + 1}: ${res.stdout}${res.stderr}`);
    out.push({ ns: hs[k]!, r, pod, ip: String(res.json.ips[0].address).split('/')[0]! });
  }
  return out;
}

/** Pings until one answers (ARP and learning settle), at most `ms`. */
async function reaches(from: Netns, to: string, ms = 15_000): Promise<boolean> {
  return until(() => from.tryRun('ping', ['-c', '1', '-W', '1', to], 5000).ok, ms, 50);
}

/** `reaches`, failing with what every router's sleeve counted. */
async function mustReach(from: Netns, to: string, what: string, h: Host[]): Promise<void> {
  if (!(await reaches(from, to, 20_000))) assert.fail(`${what}\n${diag(h)}`);
}

/** The report's line for `peer` (a connection, or a target reached through others). */
const pathTo = (r: RouterProc, peer: string) => r.report().mesh.connections.find((c: any) => c.peer === peer) as { datapath?: string; via?: string; encrypted: boolean; state: string; info?: string } | undefined;
const nameOf = (h: Host) => h.r.report().router.name as string;

/** Sends `bytes` over TCP from pod `client` to pod `server`; returns what the server counted. */
const stream = (server: Host, client: Host, bytes: number) => tcpStream(server.pod, client.pod, server.ip, bytes, 5203);

/** Drops traffic between underlay hosts a and b (all of it, or UDP to one port) in the underlay's bridge. */
function block(ul: Netns, net: string, a: number, b: number, on: boolean, udpPort?: number): void {
  const t = `wrsblock${a}${b}`;
  if (!on) {
    ul.tryRun('nft', ['delete', 'table', 'bridge', t]);
    return;
  }
  const m = udpPort ? ` udp dport ${udpPort}` : '';
  ul.run('nft', ['-f', '-'], {
    input: `table bridge ${t} {\n chain blk {\n  type filter hook forward priority 0;\n  ip saddr ${net}.${a} ip daddr ${net}.${b}${m} drop\n  ip saddr ${net}.${b} ip daddr ${net}.${a}${m} drop\n }\n}\n`,
  });
}

/** What each router's sleeve counted and its routes say, for a failure message. */
function diag(h: Host[]): string {
  return h
    .map((x, i) => {
      const m = x.ns.tryRun(process.execPath, ['-e', `fetch('http://127.0.0.1:6782/metrics').then(r=>r.text()).then(t=>process.stdout.write(t))`], 5000).out;
      const lines = m.split('\n').filter((l) => /^weft_(sleeve_drops_total|datapath_bytes_total)/.test(l) && !/ 0$/.test(l));
      const conns = x.r.report().mesh.connections.map((c: any) => `${c.peer ?? c.address} ${c.state} ${c.datapath ?? ''} via=${c.via ?? '-'}`);
      return `host ${i + 1}: ${conns.join('; ')}\n  ${lines.join('\n  ')}`;
    })
    .join('\n');
}

const addr4 = (a: string) => Buffer.from(a.split('.').map(Number));

describe('routers with a password: encrypted, refusals, multi-hop', { skip, concurrency: false, timeout: 400_000 }, () => {
  const { track, defer, cleanup } = scope();
  after(cleanup);
  const NET = '172.31.41';
  const dir = mkdtempSync(join(tmpdir(), 'weft-rs-'));
  defer(() => rmSync(dir, { recursive: true, force: true }));
  const pw = join(dir, 'password');
  const other = join(dir, 'other');
  writeFileSync(pw, 'correct horse battery staple\n');
  writeFileSync(other, 'another password\n');
  const hs = skip ? Object.assign([], { ul: undefined as never }) : underlayHosts('wrs', 5, NET, track);
  let h: Host[] = [];

  test('three routers: encrypted connections and sleeve paths; pods ping (full size) and stream', async () => {
    h = await cluster(hs.slice(0, 3), NET, dir, track, () => ['--password-file', pw]);
    const st = weftCli(h[0]!.r.socket, ['status']).out;
    assert.match(st, /Encryption: enabled/);
    assert.match(st, /TrustedSubnets: none/);
    assert.ok(await until(() => [1, 2].every((j) => pathTo(h[0]!.r, nameOf(h[j]!))?.datapath === 'sleeve'), 20_000), 'both peers on the sleeve');
    for (const j of [1, 2]) {
      const c = pathTo(h[0]!.r, nameOf(h[j]!))!;
      assert.deepEqual({ state: c.state, encrypted: c.encrypted, datapath: c.datapath, via: c.via }, { state: 'established', encrypted: true, datapath: 'sleeve', via: undefined });
    }
    assert.equal(hs[0]!.tryRun('ip', ['link', 'show', 'vxlan-6784']).ok, false, 'no plain VXLAN device with a password and no trusted subnets');
    assert.equal(h[0]!.r.report().router.mtu, 65000, 'the pod MTU is the sleeve\'s');
    assert.match(weftCli(h[0]!.r.socket, ['status', 'connections']).out, /established encrypted sleeve/);
    for (const [a, b] of [[0, 1], [0, 2], [2, 1]] as const) await mustReach(h[a]!.pod, h[b]!.ip, `pod ${a + 1} -> pod ${b + 1}`, h);
    const big = h[0]!.pod.tryRun('ping', ['-c', '2', '-W', '3', '-M', 'do', '-s', String(65000 - 28), h[1]!.ip], 20_000);
    assert.ok(big.ok, `a full-size ping (pod MTU 65000, don't fragment): ${big.out}${big.err}`);
    assert.equal(await stream(h[1]!, h[0]!, 30 * 2 ** 20), 30 * 2 ** 20, 'every byte of a 30 MiB stream arrived');
    const metrics = h[0]!.ns.run(process.execPath, ['-e', `fetch('http://127.0.0.1:6782/metrics').then(r=>r.text()).then(t=>process.stdout.write(t))`]);
    assert.match(metrics, new RegExp(`weft_datapath_bytes_total\\{path="sleeve",peer="${nameOf(h[1]!)}",direction="out"\\} [1-9]`));
    assert.match(metrics, /weft_sleeve_drops_total\{reason="auth"\} 0/);
    assert.match(metrics, /weft_sleeve_stream_datagrams_total\{direction="out"\} [1-9]/, 'the stream went on the TCP carrier');
    assert.match(metrics, /weft_sleeve_stream_closed_total\{reason="malformed"\} 0/);
  });

  test('the underlay shows no VXLAN, no inner IP header, no ping payload', async () => {
    const cap = await Capture.start(hs.ul, 'ul0', join(dir, 'enc.pcap'));
    const r = h[0]!.pod.tryRun('ping', ['-c', '5', '-i', '0.2', '-p', PATTERN, '-s', '600', h[1]!.ip], 20_000);
    const pkts: Ipv4Packet[] = await cap.stop();
    assert.ok(r.ok, `ping with a pattern: ${r.out}${r.err}`);
    const between = pkts.filter((p) => p.src.startsWith(`${NET}.`) && p.dst.startsWith(`${NET}.`));
    // the sleeve's TCP streams (mesh port + 4, the default carrier); UDP 6783 only while one is not up
    assert.ok(between.filter((p) => p.proto === 6 && (p.dport === 6787 || p.sport === 6787)).length >= 10, 'sleeve stream segments seen');
    assert.equal(between.filter((p) => p.proto === 17 && [6784, 6786, 4789, 8472].some((x) => p.dport === x || p.sport === x)).length, 0, 'no VXLAN');
    assert.equal(pkts.filter((p) => p.frame.includes(Buffer.from(PATTERN, 'hex'))).length, 0, 'the payload pattern is not readable');
    assert.equal(pkts.filter((p) => p.frame.includes(Buffer.concat([addr4(h[0]!.ip), addr4(h[1]!.ip)]))).length, 0, 'no inner IP header');
  });

  test('a router with another password is refused, says why, and its pod reaches nothing; a router without one too', async () => {
    const wrong = track(new RouterProc(hs[3]!, ['--nickname', 'h4', '--peers', `${NET}.1`, '--ipalloc-init', 'consensus=1', '--password-file', other], join(dir, 'r4'), false));
    const plain = track(new RouterProc(hs[4]!, ['--nickname', 'h5', '--peers', `${NET}.1`, '--ipalloc-init', 'consensus=1'], join(dir, 'r5'), false));
    wrong.env = FAST;
    plain.env = FAST;
    await Promise.all([wrong.start(), plain.start()]);
    const target = (r: RouterProc) => r.report().mesh.connections.find((c: any) => c.address === `${NET}.1:6783`)?.info ?? '';
    assert.ok(await until(() => /password differs/.test(target(wrong)), 20_000), `the wrong password is named: ${target(wrong)}`);
    assert.ok(await until(() => /uses encryption \(a password\) and this router has none/.test(target(plain)), 20_000), `the missing password is named: ${target(plain)}`);
    assert.match(h[0]!.r.log, new RegExp(`"remote":"${NET.replace(/\./g, '\\.')}\\.4:\\d+".*could not prove it holds this router's secret`));
    assert.match(h[0]!.r.log, /does not use encryption and this router does/);
    assert.deepEqual(wrong.report().mesh.peers.map((p: any) => p.nickname), ['h4'], 'it learnt no peer');
    assert.equal(h[0]!.r.report().mesh.peers.length, 3, 'the refused routers joined nothing');
    const pod = track(Netns.create('wrs4p'));
    const res = cni(hs[3], cniEnv('ADD', 'rs-wrong', pod.path), netConf(wrong.socket));
    assert.equal(res.code, 0, res.stderr);
    // it owns the whole range alone: addresses it handed out itself are local, not across hosts
    const own = new Set(wrong.report().ipam.attachments.map((a: any) => String(a.address).split('/')[0]));
    const others = h.filter((x) => !own.has(x.ip));
    assert.ok(others.length >= 2, 'pods of the encrypted hosts to try');
    for (const x of others) assert.equal(pod.tryRun('ping', ['-c', '2', '-i', '0.3', '-W', '1', x.ip], 10_000).ok, false, `pod behind the wrong password reaches ${x.ip}`);
  });

  test('hosts 1 and 3 cut off from each other: pods talk through host 2 (sleeve via), direct again when the cut heals', async () => {
    const [n2, n3] = [nameOf(h[1]!), nameOf(h[2]!)];
    block(hs.ul, NET, 1, 3, true);
    try {
      assert.ok(await until(() => pathTo(h[0]!.r, n3)?.via === n2, 30_000), `host 1 routes to host 3 via host 2: ${JSON.stringify(pathTo(h[0]!.r, n3))}`);
      const conns = () => weftCli(h[0]!.r.socket, ['status', 'connections']).out;
      assert.ok(await until(() => new RegExp(`encrypted sleeve via ${n2}`).test(conns()), 10_000), `status connections shows the path through host 2: ${conns()}`);
      await mustReach(h[0]!.pod, h[2]!.ip, 'pod 1 -> pod 3 through host 2', h);
      assert.equal(await stream(h[2]!, h[0]!, 10 * 2 ** 20), 10 * 2 ** 20, 'a stream through host 2');
    } finally {
      block(hs.ul, NET, 1, 3, false);
    }
    assert.ok(await until(() => pathTo(h[0]!.r, n3)?.state === 'established' && pathTo(h[0]!.r, n3)?.via === undefined, 30_000), 'direct again');
    assert.ok(await reaches(h[0]!.pod, h[2]!.ip), 'pod 1 -> pod 3 direct');
  });
});

describe('routers without a password: fallback to the sleeve and back, multi-hop', { skip, concurrency: false, timeout: 300_000 }, () => {
  const { track, defer, cleanup } = scope();
  after(cleanup);
  const NET = '172.31.42';
  const dir = mkdtempSync(join(tmpdir(), 'weft-rsp-'));
  defer(() => rmSync(dir, { recursive: true, force: true }));
  const hs = skip ? Object.assign([], { ul: undefined as never }) : underlayHosts('wrp', 3, NET, track);
  let h: Host[] = [];

  test('fastdp by default; UDP 6784 blocked between two hosts moves the peer to the sleeve, and back when unblocked', async () => {
    h = await cluster(hs, NET, dir, track, () => []);
    const n2 = nameOf(h[1]!);
    assert.match(weftCli(h[0]!.r.socket, ['status']).out, /Encryption: disabled/);
    assert.ok(await until(() => pathTo(h[0]!.r, n2)?.datapath === 'fastdp', 20_000));
    assert.ok(await reaches(h[0]!.pod, h[1]!.ip));
    const full = h[0]!.pod.tryRun('ping', ['-c', '2', '-W', '3', '-M', 'do', '-s', String(1450 - 28), h[1]!.ip], 20_000);
    assert.ok(full.ok, `a full-size ping on fastdp: ${full.out}${full.err}`);
    block(hs.ul, NET, 1, 2, true, 6784);
    try {
      assert.ok(await until(() => pathTo(h[0]!.r, n2)?.datapath === 'sleeve', 30_000), `moved to the sleeve: ${JSON.stringify(pathTo(h[0]!.r, n2))}`);
      assert.equal(pathTo(h[0]!.r, n2)!.encrypted, false);
      assert.ok(await reaches(h[0]!.pod, h[1]!.ip, 20_000), 'pods still talk');
      const big = h[0]!.pod.tryRun('ping', ['-c', '2', '-W', '3', '-M', 'do', '-s', String(1450 - 28), h[1]!.ip], 20_000);
      assert.ok(big.ok, `a full-size ping on the sleeve: ${big.out}${big.err}`);
      assert.equal(await stream(h[1]!, h[0]!, 10 * 2 ** 20), 10 * 2 ** 20, 'a stream on the sleeve');
    } finally {
      block(hs.ul, NET, 1, 2, false, 6784);
    }
    assert.ok(await until(() => pathTo(h[0]!.r, n2)?.datapath === 'fastdp', 30_000), 'back on fastdp');
    assert.ok(await reaches(h[0]!.pod, h[1]!.ip), 'pods talk on fastdp again');
  });

  test('hosts 1 and 3 cut off: sleeve via host 2, unencrypted; direct fastdp again when the cut heals', async () => {
    if (h.length === 0) h = await cluster(hs, NET, dir, track, () => []);
    const [n2, n3] = [nameOf(h[1]!), nameOf(h[2]!)];
    block(hs.ul, NET, 1, 3, true);
    try {
      assert.ok(await until(() => pathTo(h[0]!.r, n3)?.via === n2 && pathTo(h[0]!.r, n3)?.datapath === 'sleeve', 30_000), `via host 2: ${JSON.stringify(pathTo(h[0]!.r, n3))}`);
      await mustReach(h[0]!.pod, h[2]!.ip, 'pod 1 -> pod 3 through host 2', h);
      await mustReach(h[2]!.pod, h[0]!.ip, 'pod 3 -> pod 1 through host 2', h);
    } finally {
      block(hs.ul, NET, 1, 3, false);
    }
    assert.ok(await until(() => pathTo(h[0]!.r, n3)?.datapath === 'fastdp' && pathTo(h[0]!.r, n3)?.via === undefined, 30_000), 'direct fastdp again');
    assert.ok(await reaches(h[0]!.pod, h[2]!.ip), 'pod 1 -> pod 3 direct');
  });
});
