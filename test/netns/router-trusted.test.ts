/**
 * A password with `--trusted-subnets` through real routers: trusted peers are carried by kernel
 * VXLAN unencrypted, the others by the sleeve encrypted, and UDP 6784 of each host accepts
 * datagrams from the trusted subnets only (an iptables chain the fastdp overlay makes, checks
 * in `verify`, repairs, and removes when a router runs without trusted subnets).
 */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cni, cniEnv, netConf, Netns, RouterProc, scope, underlayHosts, until } from '../helpers/netns';
import { needs } from '../helpers/needs';
import { VXLAN_FILTER_CHAIN } from '../../src/datapath/fastdp';

const skip = needs({ root: true, built: true, tools: ['ip', 'nsenter', 'bridge', 'ping', 'iptables', 'bash'] });
const FAST = { WEFT_HEARTBEAT_MS: '1000', WEFT_RETRY_MIN_MS: '200', WEFT_RETRY_MAX_MS: '1000', WEFT_PROBE_MS: '1000', WEFT_PROGRAM_MS: '500', WEFT_HANDSHAKE_MS: '2000' };

/** Packet counts of the filter chain's rules on host `h`, by rule (`-s NET` or `drop`). */
function counts(h: Netns): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of h.run('iptables', ['-w', '5', '-t', 'filter', '-L', VXLAN_FILTER_CHAIN, '-v', '-x', '-n']).split('\n').slice(2)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    out.set(f[2] === 'DROP' ? 'drop' : f[7]!, Number(f[0]));
  }
  return out;
}

/** Sends `n` UDP datagrams to `ip`:6784 from host `h` (its underlay address is the source). */
const inject = (h: Netns, ip: string, n: number) => h.run('bash', ['-c', `for i in $(seq ${n}); do echo forged > /dev/udp/${ip}/6784; done`]);

describe('password with trusted subnets: kernel VXLAN for trusted peers only, UDP 6784 from them only', { skip, concurrency: false, timeout: 240_000 }, () => {
  const { track, defer, cleanup } = scope();
  after(cleanup);
  const NET = '172.31.44';
  const dir = mkdtempSync(join(tmpdir(), 'weft-rt-'));
  defer(() => rmSync(dir, { recursive: true, force: true }));
  const pw = join(dir, 'password');
  writeFileSync(pw, 'trusted test secret\n');
  const hs = skip ? Object.assign([], { ul: undefined as never }) : underlayHosts('wrt', 3, NET, track);
  const trusted = `${NET}.1/32,${NET}.2/32`;
  let rs: RouterProc[] = [];
  const pods: { ns: Netns; ip: string }[] = [];

  test('hosts 1 and 2 (trusted) use kernel VXLAN, host 3 the encrypted sleeve; pods reach each other', async () => {
    rs = hs.map((h, k) => {
      const peers = [1, 2, 3].filter((j) => j !== k + 1).map((j) => `${NET}.${j}`);
      const r = track(new RouterProc(h, ['--nickname', `h${k + 1}`, '--peers', peers.join(','), '--ipalloc-init', 'consensus=3', '--password-file', pw, '--trusted-subnets', trusted], join(dir, `r${k + 1}`), false));
      r.env = FAST;
      return r;
    });
    await Promise.all(rs.map((r) => r.start()));
    assert.ok(await until(() => rs.every((r) => r.report().ipam.status === 'ready'), 30_000), 'IPAM ready everywhere');
    for (const [k, r] of rs.entries()) {
      const pod = track(Netns.create(`wrt${k + 1}p`));
      const res = cni(hs[k], cniEnv('ADD', `rt-${pod.name}`, pod.path), netConf(r.socket));
      assert.equal(res.code, 0, `pod on host ${k + 1}: ${res.stdout}${res.stderr}`);
      pods.push({ ns: pod, ip: String(res.json.ips[0].address).split('/')[0]! });
    }
    const name = (i: number) => rs[i]!.report().router.name as string;
    const path = (i: number, j: number) => rs[i]!.report().mesh.connections.find((c: any) => c.peer === name(j)) as { datapath?: string; encrypted?: boolean } | undefined;
    assert.ok(await until(() => path(0, 1)?.datapath === 'fastdp' && path(0, 2)?.datapath === 'sleeve', 20_000), `paths from host 1: ${JSON.stringify([path(0, 1), path(0, 2)])}`);
    assert.deepEqual([path(0, 1)!.encrypted, path(0, 2)!.encrypted], [false, true]);
    // host 3, outside, seals towards the trusted hosts too: both ends of a link decide alike
    assert.ok(await until(() => [0, 1].every((j) => path(2, j)?.datapath === 'sleeve' && path(2, j)?.encrypted === true), 20_000), `paths from host 3: ${JSON.stringify([path(2, 0), path(2, 1)])}`);
    assert.equal(hs[2]!.tryRun('ip', ['link', 'show', 'vxlan-6784']).ok, false, 'no plain VXLAN device on the host outside');
    for (const [a, b] of [[0, 1], [1, 0], [0, 2], [2, 0]] as const) {
      assert.ok(await until(() => pods[a]!.ns.tryRun('ping', ['-c', '1', '-W', '1', pods[b]!.ip], 5000).ok, 15_000, 50), `pod ${a + 1} -> pod ${b + 1}`);
    }
  });

  test('UDP 6784 accepts datagrams from the trusted subnets and drops the others', async () => {
    const h1 = hs[0]!;
    assert.ok(await until(() => counts(h1).has('drop'), 10_000), 'the filter chain is there');
    assert.deepEqual([...counts(h1).keys()], [`${NET}.1`, `${NET}.2`, 'drop']);
    const before = counts(h1);
    inject(hs[2]!, `${NET}.1`, 5); // host 3: outside the trusted subnets
    inject(hs[1]!, `${NET}.1`, 3); // host 2: inside
    const after = counts(h1);
    assert.ok(after.get('drop')! - before.get('drop')! >= 5, `host 3's datagrams dropped: ${before.get('drop')} -> ${after.get('drop')}`);
    assert.ok(after.get(`${NET}.2`)! - before.get(`${NET}.2`)! >= 3, "host 2's datagrams let through");
  });

  test('a removed filter is noticed and put back; a router without trusted subnets removes it', async () => {
    const h1 = hs[0]!;
    h1.run('iptables', ['-w', '5', '-t', 'filter', '-D', 'INPUT', '-j', VXLAN_FILTER_CHAIN]);
    assert.ok(await until(() => h1.tryRun('iptables', ['-w', '5', '-t', 'filter', '-C', 'INPUT', '-j', VXLAN_FILTER_CHAIN]).ok, 20_000), 'the router repaired the jump');
    assert.match(rs[0]!.log, /WEFT-VXLAN-IN is not hooked into INPUT/, 'verify named what was missing');
    await rs[0]!.kill();
    const plain = track(new RouterProc(h1, ['--nickname', 'h1plain', '--ipalloc-init', 'consensus=1', '--advertise-addr', `${NET}.1`], join(dir, 'r1plain'), false));
    plain.env = FAST;
    await plain.start();
    assert.ok(await until(() => !h1.tryRun('iptables', ['-w', '5', '-t', 'filter', '-S', VXLAN_FILTER_CHAIN]).ok, 20_000), 'the chain is gone');
    assert.equal(h1.tryRun('ip', ['link', 'show', 'vxlan-6784']).ok, true, 'kernel VXLAN itself stays');
  });
});
