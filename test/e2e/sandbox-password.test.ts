/**
 * End to end through the real CLI: `dist/weft sandbox up --password-file FILE` runs every router
 * encrypted (pods ping across hosts over the sleeve, `weft status` says "Encryption: enabled"),
 * a bad password file is refused before anything is made, and `down` leaves nothing.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { uid, weftAsync } from '../helpers/netns';
import { needs, NETNS } from '../helpers/needs';
import { eventually, namespacesWith, processesMentioning } from '../helpers/sandbox';
import { Sandbox, sandboxDir } from '../../src/sandbox';

const skip = needs(NETNS);

describe('sandbox with a password, through the CLI', { skip, concurrency: false, timeout: 300_000 }, () => {
  const prefix = `wsp${uid().slice(0, 4)}`;
  const dir = sandboxDir(prefix);
  const tmp = mkdtempSync(join(tmpdir(), 'weft-sbp-'));
  const pw = join(tmp, 'password');
  writeFileSync(pw, 'sandbox secret\n');
  let up: Awaited<ReturnType<typeof weftAsync>>;
  let sb: Sandbox;

  before(async () => {
    up = await weftAsync(['sandbox', 'up', '--hosts', '3', '--pods', '1', '--password-file', pw, '--prefix', prefix, '--no-matrix', '--wait', '120']);
    assert.equal(up.code, 0, `sandbox up: ${up.stdout}\n${up.stderr}`);
    sb = await Sandbox.open({ prefix });
  });
  after(async () => {
    await weftAsync(['sandbox', 'down', '--prefix', prefix]);
    rmSync(tmp, { recursive: true, force: true });
  });

  test('a missing or empty password file is refused naming the flag, and nothing is made', async () => {
    const other = `wsq${uid().slice(0, 4)}`;
    const empty = join(tmp, 'empty');
    writeFileSync(empty, '');
    for (const [file, re] of [[join(tmp, 'missing'), /--password-file: cannot read .*missing/], [empty, /--password-file: .*empty/]] as const) {
      const r = await weftAsync(['sandbox', 'up', '--hosts', '2', '--password-file', file, '--prefix', other, '--no-matrix']);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, re);
      assert.deepEqual(namespacesWith(other), [], 'no namespace made');
      assert.equal(existsSync(sandboxDir(other)), false, 'no state made');
    }
  });

  test('every router runs with the password: status says so, peers are carried encrypted by the sleeve', async () => {
    assert.match(up.stdout, /Encryption: enabled/);
    for (const h of sb.hosts) {
      const argv = readFileSync(`/proc/${h.pid}/cmdline`, 'utf8').split('\0');
      assert.equal(argv[argv.indexOf('--password-file') + 1], pw, `host ${h.index}: ${argv.join(' ')}`);
      assert.match(await sb.weftStatus(h.index), /Encryption: enabled/);
      const conns = async () => (await weftAsync(['--socket', h.socket, 'status', 'connections'])).stdout;
      assert.ok(await eventually(async () => (await conns()).match(/established encrypted sleeve/g)?.length === 2, 30_000), `host ${h.index}: two encrypted sleeve peers: ${await conns()}`);
    }
  });

  test('pods ping each other across hosts', async () => {
    let m = await sb.pingMatrix();
    assert.ok(await eventually(async () => (m = await sb.pingMatrix()).crossHost.ok === m.crossHost.total, 30_000), `cross-host pings: ${m.crossHost.ok}/${m.crossHost.total}`);
    assert.equal(m.crossHost.total, 6);
  });

  test('down leaves no namespace, router or state', async () => {
    const d = await weftAsync(['sandbox', 'down', '--prefix', prefix]);
    assert.equal(d.code, 0, d.stderr);
    assert.deepEqual(namespacesWith(prefix), []);
    assert.deepEqual(processesMentioning(dir), []);
    assert.equal(existsSync(dir), false);
  });
});
