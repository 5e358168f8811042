/**
 * One executable for the plugin and the router/CLI (src/bin/main.ts): which one runs follows
 * the name it is invoked under. Runs dist/ binaries; touches no network at all.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { linkSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Netns, RouterProc, WEFT, WEFT_NET } from '../helpers/netns';
import { needs, NETNS } from '../helpers/needs';
import { ROUTER_V8_FLAGS, withRouterFlags } from '../../src/bin/daemon-flags';

const VERSION_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', CNI_COMMAND: 'VERSION' };
const isPluginAnswer = (out: string) => {
  try {
    return Array.isArray(JSON.parse(out).supportedVersions);
  } catch {
    return false;
  }
};

test('dist/weft-net is dist/weft; invoked as weft-net it is the plugin, under any other name the CLI', { skip: needs(NETNS) }, () => {
  assert.equal(statSync(WEFT_NET).ino, statSync(WEFT).ino, 'one file, two names');
  const dir = mkdtempSync(join(tmpdir(), 'weft-multicall-'));
  try {
    symlinkSync(WEFT, join(dir, 'weft-net'));
    linkSync(WEFT, join(dir, 'other-name'));
    const runs: [string, string[], Record<string, string>][] = [
      ['dist/weft-net', [WEFT_NET], VERSION_ENV],
      ['a symlink named weft-net', [join(dir, 'weft-net')], VERSION_ENV],
      ['weft-net found on PATH', ['weft-net'], { ...VERSION_ENV, PATH: `${dir}:${VERSION_ENV.PATH}` }],
    ];
    for (const [what, argv, env] of runs) {
      const r = spawnSync(argv[0]!, argv.slice(1), { env, encoding: 'utf8' });
      assert.equal(r.status, 0, `${what}: ${r.stderr}`);
      assert.ok(isPluginAnswer(r.stdout), `${what} answers as the plugin: ${r.stdout}`);
    }
    for (const exe of [WEFT, join(dir, 'other-name')]) {
      const v = spawnSync(exe, ['version'], { env: VERSION_ENV, encoding: 'utf8' });
      assert.equal(v.status, 0, v.stderr);
      assert.match(v.stdout, /^weft \d+\.\d+\.\d+/, `${exe} is the CLI even with CNI_COMMAND set`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('weft install-cni without --plugin installs this executable under the plugin name, by write then rename', { skip: needs(NETNS) }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-install1-'));
  try {
    const bin = join(dir, 'bin');
    const r = spawnSync(WEFT, ['install-cni', '--bin-dir', bin, '--conf-dir', join(dir, 'net.d')], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const installed = join(bin, 'weft-net');
    assert.ok(readFileSync(installed).equals(readFileSync(WEFT)), 'a byte-for-byte copy of weft');
    const v = spawnSync(installed, [], { env: VERSION_ENV, encoding: 'utf8' });
    assert.ok(isPluginAnswer(v.stdout), 'the copy runs as the plugin');
    assert.deepEqual(
      spawnSync('ls', ['-A', bin], { encoding: 'utf8' }).stdout.trim().split('\n'),
      ['weft-net'],
      'no temporary file left next to it',
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the router, unlike a CNI call, hashes with a seed of its own: it replaces itself (same pid) with a run that rehashes the snapshot, with the router\'s V8 flags', { skip: needs(NETNS) }, async () => {
  const host = Netns.create('wt-mc');
  const router = new RouterProc(host);
  try {
    await router.start();
    const argv = readFileSync(`/proc/${router.pid!}/cmdline`, 'utf8').split('\0');
    const opts = argv.find((a) => /^--node-options=(.* )?--rehash-snapshot$/.test(a));
    assert.ok(opts, argv.join(' '));
    for (const f of ROUTER_V8_FLAGS) assert.ok(opts.slice('--node-options='.length).split(' ').includes(f), `${f} in ${opts}`);
    assert.ok(argv.includes('router') && argv.includes(router.socket), 'still the router it was started as');
  } finally {
    await router.destroy();
    host.destroy();
  }
});

test('the router\'s V8 flags are added unless a flag of the same name is given', () => {
  assert.deepEqual(withRouterFlags(['--cpu-prof']), ['--cpu-prof', ...ROUTER_V8_FLAGS]);
  for (const mine of ['--max-semi-space-size=8', '--max_semi_space_size=8']) {
    const got = withRouterFlags([mine]);
    assert.equal(got[0], mine);
    assert.deepEqual(got.slice(1), ROUTER_V8_FLAGS.filter((f) => !f.startsWith('--max-semi-space-size=')), `${mine}: the router's own semi-space flag is left out, the others kept`);
  }
});
