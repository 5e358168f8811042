/**
 * weft-net in a conflist chain with Debian's reference plugins (tuning, bandwidth, portmap),
 * driven as libcni drives a chain: ADD forward with prevResult, CHECK forward, DEL in reverse.
 * Also `weft install-cni`.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cniEnv, Netns, RouterProc, rootSkip, sleep, WEFT, WEFT_NET } from '../helpers/netns';

const REF = '/usr/lib/cni';
const skip = rootSkip() ?? (existsSync(join(REF, 'portmap')) ? undefined : 'needs containernetworking-plugins');

/** Runs one plugin of the chain inside the host netns. */
function plugin(host: Netns, type: string, env: Record<string, string>, conf: unknown) {
  const bin = type === 'weft-net' ? WEFT_NET : join(REF, type);
  const r = spawnSync('nsenter', [`--net=${host.path}`, '--', bin], {
    input: JSON.stringify(conf),
    encoding: 'utf8',
    timeout: 30_000,
    env: { PATH: process.env.PATH, CNI_PATH: REF, ...env },
  });
  return { code: r.status, out: r.stdout, json: r.stdout.trim() ? JSON.parse(r.stdout) : undefined, err: r.stderr };
}

describe('a conflist chain with the reference plugins', { skip, concurrency: false }, () => {
  let host: Netns;
  let pod: Netns;
  let router: RouterProc;
  before(async () => {
    host = Netns.create('wc-h');
    pod = Netns.create('wc-p');
    router = new RouterProc(host);
    await router.start();
  });
  after(async () => {
    await router?.destroy();
    pod?.destroy();
    host?.destroy();
  });

  test('ADD forward, CHECK forward, DEL in reverse; the port mapping carries traffic', async () => {
    const version = '1.0.0';
    const plugins = [
      { type: 'weft-net', socket: router.socket },
      { type: 'tuning', sysctl: { 'net.ipv4.conf.eth0.rp_filter': '2' } },
      { type: 'bandwidth', capabilities: { bandwidth: true } },
      { type: 'portmap', capabilities: { portMappings: true }, snat: true },
    ];
    const runtimeConfig: Record<string, unknown> = {
      portMappings: [{ hostPort: 18080, containerPort: 8080, protocol: 'tcp' }],
      bandwidth: { ingressRate: 100_000_000, ingressBurst: 10_000_000, egressRate: 100_000_000, egressBurst: 10_000_000 },
    };
    const confFor = (p: Record<string, unknown>, prevResult?: unknown) => {
      const caps = Object.keys((p.capabilities as Record<string, boolean>) ?? {});
      const rc = Object.fromEntries(caps.map((c) => [c, runtimeConfig[c]]));
      return { cniVersion: version, name: 'chainnet', ...p, ...(caps.length ? { runtimeConfig: rc } : {}), ...(prevResult ? { prevResult } : {}) };
    };
    const env = cniEnv('ADD', 'chain-1', pod.path, 'eth0', { CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web' });
    let result: any;
    for (const p of plugins) {
      const r = plugin(host, p.type, env, confFor(p, result));
      assert.equal(r.code, 0, `${p.type} ADD: ${r.out} ${r.err}`);
      result = r.json;
    }
    const podIp = result.ips[0].address.split('/')[0];
    assert.match(podIp, /^10\./);
    assert.equal(pod.run('sysctl', ['-n', 'net.ipv4.conf.eth0.rp_filter']).trim(), '2', 'tuning ran on our interface');
    assert.match(host.run('iptables-save', ['-t', 'nat']), new RegExp(`--to-destination ${podIp.replace(/\./g, '\\.')}:8080`));

    // portmap 1.1.1's own CHECK fails on IPv4-only pods ("could not check ipv6 dnat: chain ...
    // not found"), whoever comes before it; it is left out of the CHECK pass
    for (const p of plugins.filter((x) => x.type !== 'portmap')) {
      const r = plugin(host, p.type, { ...env, CNI_COMMAND: 'CHECK' }, confFor(p, result));
      assert.equal(r.code, 0, `${p.type} CHECK: ${r.out} ${r.err}`);
    }

    // a listener in the pod, reached through the host port on the host's own address
    const server = spawn('nsenter', [`--net=${pod.path}`, '--', process.execPath, '-e', "require('net').createServer(s=>s.end('hello-from-pod')).listen(8080)"]);
    try {
      await sleep(500);
      const gw = result.ips[0].gateway;
      const client = `require('net').connect(18080, ${JSON.stringify(gw)}).on('data', d => { process.stdout.write(d); process.exit(0) }).on('error', e => { console.error(e.message); process.exit(1) })`;
      const got = spawnSync('nsenter', [`--net=${host.path}`, '--', process.execPath, '-e', client], { encoding: 'utf8', timeout: 10_000 });
      assert.equal(got.stdout, 'hello-from-pod', got.stderr);
    } finally {
      server.kill('SIGKILL');
    }

    for (const p of [...plugins].reverse()) {
      const r = plugin(host, p.type, { ...env, CNI_COMMAND: 'DEL' }, confFor(p, result));
      assert.equal(r.code, 0, `${p.type} DEL: ${r.out} ${r.err}`);
    }
    assert.doesNotMatch(host.run('iptables-save', ['-t', 'nat']), new RegExp(podIp.replace(/\./g, '\\.')));
    assert.deepEqual(router.report().ipam.attachments.filter((a: any) => a.network === 'chainnet'), []);
  });

  test('a 0.4.0 chain parses our result as prevResult', () => {
    const p2 = Netns.create('wc-q');
    try {
      const env = cniEnv('ADD', 'chain-2', p2.path);
      const a = plugin(host, 'weft-net', env, { cniVersion: '0.4.0', name: 'chainnet', type: 'weft-net', socket: router.socket });
      assert.equal(a.code, 0, a.out);
      const t = plugin(host, 'tuning', env, { cniVersion: '0.4.0', name: 'chainnet', type: 'tuning', mtu: 1400, prevResult: a.json });
      assert.equal(t.code, 0, t.out + t.err);
      assert.equal(p2.links().find((l) => l.ifname === 'eth0')!.mtu, 1400);
      assert.equal(plugin(host, 'weft-net', { ...env, CNI_COMMAND: 'DEL' }, { cniVersion: '0.4.0', name: 'chainnet', type: 'weft-net', socket: router.socket }).code, 0);
    } finally {
      p2.destroy();
    }
  });
});

describe('weft install-cni', { skip: rootSkip() }, () => {
  test('installs the plugin and a conflist atomically; keeps an existing conflist unless --force', () => {
    const dir = mkdtempSync(join(tmpdir(), 'weft-install-'));
    try {
      const bin = join(dir, 'bin');
      const conf = join(dir, 'net.d');
      const run = (extra: string[] = []) => spawnSync(WEFT, ['install-cni', '--bin-dir', bin, '--conf-dir', conf, '--plugin', WEFT_NET, ...extra], { encoding: 'utf8' });
      const r = run();
      assert.equal(r.status, 0, r.stderr);
      const installed = join(bin, 'weft-net');
      assert.equal(statSync(installed).size, statSync(WEFT_NET).size);
      assert.ok(statSync(installed).mode & 0o111, 'executable');
      const cl = JSON.parse(readFileSync(join(conf, '10-weft.conflist'), 'utf8'));
      assert.equal(cl.plugins[0].type, 'weft-net');
      assert.equal(spawnSync(installed, [], { env: { CNI_COMMAND: 'VERSION' }, encoding: 'utf8' }).status, 0);
      const again = run(['--socket', '/x/y.sock']);
      assert.match(again.stdout, /kept/);
      assert.equal(JSON.parse(readFileSync(join(conf, '10-weft.conflist'), 'utf8')).plugins[0].socket, '/run/weft/weft.sock');
      run(['--socket', '/x/y.sock', '--force']);
      assert.equal(JSON.parse(readFileSync(join(conf, '10-weft.conflist'), 'utf8')).plugins[0].socket, '/x/y.sock');
      const bad = run(['--conf-name', '../evil']);
      assert.equal(bad.status, 1);
      assert.match(bad.stderr, /--conf-name/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
