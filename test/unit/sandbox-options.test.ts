/** `weft sandbox` pieces that need no root: option checks, --router-args splitting, the pool, the grid. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../../src/common/errors';
import { attachLines, hostLines, routerArgv, underlayLines } from '../../src/sandbox/netlab';
import { checkPrefix, formatMatrix, mapPool, splitArgs, upOptions, withConsensus, type PingMatrix, type SandboxPod } from '../../src/sandbox';

const exe = '/bin/true';

test('splitArgs: words, quotes, escapes', () => {
  assert.deepEqual(splitArgs(''), []);
  assert.deepEqual(splitArgs('  --log-level debug  --no-masq '), ['--log-level', 'debug', '--no-masq']);
  assert.deepEqual(splitArgs(`--nick "a b" 'c d' e\\ f ""`), ['--nick', 'a b', 'c d', 'e f', '']);
  assert.deepEqual(splitArgs(`"say \\"hi\\""`), ['say "hi"']);
  assert.throws(() => splitArgs(`"open`), (e: unknown) => e instanceof ConfigError && e.message.startsWith('--router-args'));
});

test('upOptions: defaults and limits, errors name the flag', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-sbopt-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const plain = join(dir, 'not-executable');
  writeFileSync(plain, 'x', { mode: 0o644 });
  const o = upOptions({ weft: exe, plugin: exe });
  assert.deepEqual([o.hosts, o.pods, o.mtu, o.routerArgs, o.underlay, o.defaultRoute], [2, 2, 1500, [], 'advertise', true]);
  assert.deepEqual(
    (({ underlay, defaultRoute }) => ({ underlay, defaultRoute }))(upOptions({ weft: exe, plugin: exe, underlay: 'discover', defaultRoute: false })),
    { underlay: 'discover', defaultRoute: false },
  );
  assert.equal(upOptions({ weft: exe, plugin: exe, hosts: '64', pods: '0' }).hosts, 64);
  const bad: [Record<string, string>, string][] = [
    [{ hosts: '0' }, '--hosts'],
    [{ hosts: '65' }, '--hosts'],
    [{ hosts: '2.5' }, '--hosts'],
    [{ pods: '65' }, '--pods'],
    [{ pods: '-1' }, '--pods'],
    [{ mtu: '600' }, '--mtu'],
    [{ mtu: '70000' }, '--mtu'],
    [{ plugin: '/nonexistent/weft-net' }, '--plugin'],
    [{ plugin: plain }, '--plugin'],
    [{ plugin: dir }, '--plugin'],
    [{ routerArgs: '--socket /tmp/x' }, '--router-args'],
    [{ routerArgs: '--state-dir=/tmp/x' }, '--router-args'],
    [{ underlay: 'dhcp' }, '--underlay'],
  ];
  for (const [raw, flag] of bad) {
    assert.throws(
      () => upOptions({ weft: exe, plugin: exe, ...raw }),
      (e: unknown) => e instanceof ConfigError && e.message.startsWith(flag),
      JSON.stringify(raw),
    );
  }
});

test('netlab: the set-up lines of an underlay and its hosts, and a router argv', () => {
  const u = { netns: 'x-ul', bridge: 'br0', mtu: 9000 };
  assert.deepEqual(underlayLines(u), ['link set lo up', 'link add br0 mtu 9000 type bridge', 'link set br0 up']);
  assert.deepEqual(underlayLines({ netns: 'x-ul', bridge: 'ul0' })[1], 'link add ul0 type bridge');
  const h = { netns: 'x-h1', underlayVeth: 'h1', ifname: 'eth0', cidr: '172.30.0.11/24' };
  assert.deepEqual(attachLines(u, [h]), ['link add h1 mtu 9000 type veth peer name eth0 mtu 9000 netns x-h1', 'link set h1 master br0', 'link set h1 up']);
  assert.deepEqual(hostLines(h), ['link set lo up', 'addr add 172.30.0.11/24 dev eth0', 'link set eth0 up']);
  assert.equal(hostLines({ ...h, defaultRoute: true }).at(-1), 'route add default dev eth0');
  assert.deepEqual(routerArgv({ stateDir: '/s', socket: '/k' }), ['router', '--state-dir', '/s', '--socket', '/k']);
  assert.deepEqual(
    routerArgv({ stateDir: '/s', socket: '/k', advertiseAddr: '10.0.0.1', metricsAddr: '127.0.0.1:6782', nickname: 'n', peers: ['a', 'b'], extra: ['--log-level', 'debug'] }),
    ['router', '--state-dir', '/s', '--socket', '/k', '--advertise-addr', '10.0.0.1', '--metrics-addr', '127.0.0.1:6782', '--nickname', 'n', '--peers', 'a,b', '--log-level', 'debug'],
  );
  assert.ok(!routerArgv({ stateDir: '/s', socket: '/k', peers: [] }).includes('--peers'));
});

test('checkPrefix', () => {
  assert.equal(checkPrefix('wsb'), 'wsb');
  for (const p of ['', 'W', '1ab', 'a-b', 'abcdefghijklm']) assert.throws(() => checkPrefix(p), ConfigError, p);
});

test('mapPool: order kept, bounded, waits for in-flight work before rejecting', async () => {
  let inFlight = 0;
  let peak = 0;
  const r = await mapPool([1, 2, 3, 4, 5, 6, 7], 3, async (x) => {
    inFlight++;
    peak = Math.max(peak, inFlight);
    await new Promise((res) => setTimeout(res, 5 * (8 - x)));
    inFlight--;
    return x * 10;
  });
  assert.deepEqual(r, [10, 20, 30, 40, 50, 60, 70]);
  assert.equal(peak, 3);

  const settled: number[] = [];
  await assert.rejects(
    mapPool([1, 2, 3, 4, 5], 2, async (x) => {
      if (x === 1) throw new Error('boom');
      await new Promise((res) => setTimeout(res, 20));
      settled.push(x);
    }),
    /boom/,
  );
  assert.deepEqual(settled, [2], 'the call in flight finished, none started after the failure');
});

test('formatMatrix: grid, duplicates, summary', () => {
  const pod = (name: string, host: number, address: string): SandboxPod => ({ name, host, containerId: name, ifname: 'eth0', netnsPath: '', address, cidr: `${address}/12` });
  const pods = [pod('wsb-h1-p1', 1, '10.32.0.2'), pod('wsb-h1-p2', 1, '10.32.0.3'), pod('wsb-h2-p1', 2, '10.32.0.3')];
  const m: PingMatrix = {
    pods,
    ok: [
      [null, false, false],
      [true, null, false],
      [false, false, null],
    ],
    duplicates: [{ address: '10.32.0.3', pods: ['wsb-h1-p2', 'wsb-h2-p1'] }],
    sameHost: { ok: 1, total: 2 },
    crossHost: { ok: 0, total: 4 },
    pinged: 6,
    totalPairs: 6,
    noBufferSpace: 0,
    ms: 12,
  };
  const text = formatMatrix(m, 'wsb');
  assert.match(text, /^from \\ to\s+h1-p1 h1-p2 h2-p1$/m);
  assert.match(text, /^h1-p2 10\.32\.0\.3\s+ok\s+-\s+DUP$/m);
  assert.match(text, /^h2-p1 10\.32\.0\.3\s+FAIL\s+DUP\s+-$/m);
  assert.match(text, /DUP: 10\.32\.0\.3 is held by h1-p2, h2-p1/);
  assert.match(text, /connectivity: 1\/6 pings ok, 5 FAIL, 1 duplicate address \(same host 1\/2, across hosts 0\/4\) in 12 ms/);
});

test('routers of a chained sandbox start their ring by consensus among all the hosts; a seed join, --kube and an operator\'s --ipalloc-init are left alone', () => {
  assert.deepEqual(withConsensus({ kube: false, join: 'chain', routerArgs: ['--log-level', 'debug'], hosts: 5 }), ['--log-level', 'debug', '--ipalloc-init', 'consensus=5']);
  assert.deepEqual(withConsensus({ kube: false, join: 'seed', routerArgs: [], hosts: 5 }), [], 'host 1 owns the range and hands it out, as in the seeds');
  assert.deepEqual(withConsensus({ kube: false, join: 'chain', routerArgs: ['--ipalloc-init=seed=a'], hosts: 5 }), ['--ipalloc-init=seed=a']);
  assert.deepEqual(withConsensus({ kube: false, join: 'chain', routerArgs: ['--ipalloc-init', 'observer'], hosts: 5 }), ['--ipalloc-init', 'observer']);
  assert.deepEqual(withConsensus({ kube: true, join: 'chain', routerArgs: [], hosts: 3 }), []);
});

test('upOptions: --password-file and --trusted-subnets become router flags, checked first; errors name the flag', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-sbpw-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const pw = join(dir, 'pw');
  const empty = join(dir, 'empty');
  writeFileSync(pw, 'secret\n');
  writeFileSync(empty, '\n');
  const base = { weft: exe, plugin: exe };
  assert.deepEqual(upOptions({ ...base, passwordFile: pw, routerArgs: '--log-level debug' }).routerArgs, ['--log-level', 'debug', '--password-file', pw]);
  assert.deepEqual(upOptions({ ...base, passwordFile: pw, trustedSubnets: '172.30.0.0/24, 10.0.0.0/8' }).routerArgs, ['--password-file', pw, '--trusted-subnets', '172.30.0.0/24,10.0.0.0/8']);
  const bad: [Record<string, string>, RegExp][] = [
    [{ passwordFile: join(dir, 'missing') }, /^--password-file: cannot read .*missing: ENOENT/],
    [{ passwordFile: empty }, /^--password-file: .*empty/],
    [{ trustedSubnets: '10.0.0.0/8' }, /^--trusted-subnets: needs --password-file/],
    [{ passwordFile: pw, trustedSubnets: '10.0.0.0/8,nonsense' }, /^--trusted-subnets: "nonsense" is not a network/],
    [{ passwordFile: pw, routerArgs: `--password-file=${pw}` }, /^--router-args: --password-file is given as a sandbox option/],
    [{ passwordFile: pw, trustedSubnets: '10.0.0.0/8', routerArgs: '--trusted-subnets 10.0.0.0/8' }, /^--router-args: --trusted-subnets is given as a sandbox option/],
  ];
  for (const [raw, re] of bad) assert.throws(() => upOptions({ ...base, ...raw }), (e: unknown) => e instanceof ConfigError && re.test(e.message), JSON.stringify(raw));
});
