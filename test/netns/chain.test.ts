/**
 * weft-net in a conflist chain with Debian's reference plugins (tuning, bandwidth, portmap),
 * driven as libcni drives a chain: ADD forward with prevResult, CHECK forward, DEL in reverse.
 * Also `weft install-cni`.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cniEnv, Netns, RouterProc, until, WEFT, WEFT_NET } from '../helpers/netns';
import { needs, NETNS } from '../helpers/needs';

const REF = '/usr/lib/cni';
const skip = needs({ ...NETNS, tools: [...NETNS.tools!, 'iperf3', 'sysctl'], files: ['portmap', 'tuning', 'bandwidth'].map((p) => join(REF, p)) });

/** Waits (bounded) until something listens on TCP `port` inside `ns`. */
function listening(ns: Netns, port: number): Promise<boolean> {
  return until(() => ns.tryRun('ss', ['-Hltn', `sport = :${port}`]).out.trim() !== '', 10_000, 50);
}

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
      assert.ok(await listening(pod, 8080), 'the listener in the pod is up');
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

  test('bandwidth in the chain limits what reaches the pod: near its rate, far below the same path unlimited', async (t) => {
    const rate = 40_000_000; // bits/s into the pod
    const measure = async (id: string, limited: boolean): Promise<number> => {
      const p = Netns.create(`wc-bw${limited ? 'l' : 'u'}`);
      try {
        const env = cniEnv('ADD', id, p.path);
        const chain = [
          { cniVersion: '1.0.0', name: 'bwnet', type: 'weft-net', socket: router.socket },
          ...(limited ? [{ cniVersion: '1.0.0', name: 'bwnet', type: 'bandwidth', capabilities: { bandwidth: true }, runtimeConfig: { bandwidth: { ingressRate: rate, ingressBurst: rate / 8 } } }] : []),
        ];
        let result: any;
        for (const c of chain) {
          const r = plugin(host, c.type, env, { ...c, ...(result ? { prevResult: result } : {}) });
          assert.equal(r.code, 0, `${c.type} ADD: ${r.out} ${r.err}`);
          result = r.json;
        }
        const addr = result.ips[0].address.split('/')[0];
        const server = spawn('nsenter', [`--net=${p.path}`, '--', 'iperf3', '-s', '-1', '-p', '5201'], { stdio: 'ignore' });
        try {
          assert.ok(await listening(p, 5201), 'iperf3 listens in the pod');
          const out = host.run('iperf3', ['-c', addr, '-p', '5201', '-t', '3', '-O', '1', '-J'], { timeoutMs: 30_000 });
          const bps = JSON.parse(out).end.sum_received.bits_per_second as number;
          assert.ok(bps > 0, out);
          return bps;
        } finally {
          server.kill('SIGKILL');
          for (const c of [...chain].reverse()) plugin(host, c.type, { ...env, CNI_COMMAND: 'DEL' }, { ...c, prevResult: result });
        }
      } finally {
        p.destroy();
      }
    };
    const unlimited = await measure('bw-free', false);
    const limited = await measure('bw-limited', true);
    const info = `limited ${(limited / 1e6).toFixed(1)} Mbit/s, unlimited ${(unlimited / 1e6).toFixed(1)} Mbit/s, rate ${rate / 1e6} Mbit/s`;
    t.diagnostic(info);
    // ratios only, and wide bands: shaping is approximate and this machine is shared
    assert.ok(limited / rate > 0.4 && limited / rate < 1.6, `near the rate: ${info}`);
    assert.ok(limited / unlimited < 0.5, `well below the unlimited path: ${info}`);
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

describe('weft install-cni', { skip: needs({ built: true }) }, () => {
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

  test('a reader never sees a partial plugin or conflist: each install replaces the file by a rename (new inode), never writes it in place', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'weft-install-'));
    try {
      const bin = join(dir, 'bin');
      const conf = join(dir, 'net.d');
      const install = (n: number) =>
        new Promise<number | null>((resolve) => {
          const p = spawn(WEFT, ['install-cni', '--bin-dir', bin, '--conf-dir', conf, '--plugin', WEFT_NET, '--socket', `/run/weft${n}.sock`, '--force'], { stdio: 'ignore' });
          p.on('close', resolve);
        });
      assert.equal(await install(0), 0);
      const installed = join(bin, 'weft-net');
      const conflist = join(conf, '10-weft.conflist');
      const size = statSync(WEFT_NET).size;
      // a reader in another process: the plugin's size and the conflist's JSON, as fast as it can
      const stop = join(dir, 'stop');
      const reader = spawn(
        process.execPath,
        [
          '-e',
          `const fs = require('fs'); const [bin, conf, stop, size] = process.argv.slice(1); let reads = 0, bad = [];
           while (!fs.existsSync(stop)) {
             try { const s = fs.statSync(bin).size; if (s !== Number(size)) bad.push('plugin size ' + s); } catch (e) { bad.push('plugin ' + e.code); }
             try { JSON.parse(fs.readFileSync(conf, 'utf8')); } catch (e) { bad.push('conflist ' + (e.code || 'torn')); }
             reads++;
           }
           process.stdout.write(JSON.stringify({ reads, bad: bad.slice(0, 5), nbad: bad.length }));`,
          installed,
          conflist,
          stop,
          String(size),
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      let out = '';
      reader.stdout.on('data', (d) => (out += d));
      const done = new Promise<void>((r) => reader.on('close', () => r()));
      for (let n = 1; n <= 4; n++) {
        // the new file exists beside the old one until the rename: it cannot have the old inode
        const before = [statSync(installed).ino, statSync(conflist).ino];
        assert.equal(await install(n), 0);
        assert.notEqual(statSync(installed).ino, before[0], `install ${n} replaced the plugin, not rewrote it`);
        assert.notEqual(statSync(conflist).ino, before[1], `install ${n} replaced the conflist`);
        assert.equal(JSON.parse(readFileSync(conflist, 'utf8')).plugins[0].socket, `/run/weft${n}.sock`);
      }
      writeFileSync(stop, '');
      assert.ok(await until(() => out !== '', 60_000, 20), 'the reader finished');
      await done;
      const seen = JSON.parse(out) as { reads: number; bad: string[]; nbad: number };
      assert.ok(seen.reads > 0);
      assert.deepEqual(seen.bad, [], `${seen.nbad} partial reads in ${seen.reads}`);
      assert.deepEqual(readdirSync(bin), ['weft-net'], 'no temporary file left');
      assert.deepEqual(readdirSync(conf), ['10-weft.conflist']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
