/** No silent skips under CI: a suite whose needs are missing skips on a laptop and fails in CI, naming them. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inCi, MissingNeedError, missingNeeds, needs, ROOT, WEFT, WEFT_NET, type Machine } from '../helpers/needs';

const machine = (over: Partial<Machine> & { path?: string; ci?: string } = {}): Machine => ({
  env: { PATH: over.path ?? '', ...(over.ci !== undefined ? { CI: over.ci } : {}) },
  isRoot: over.isRoot ?? true,
  exists: over.exists ?? (() => true),
});

test('each missing need is named: root, the executables, programs on PATH, files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-needs-'));
  try {
    writeFileSync(join(dir, 'present'), '#!/bin/sh\n');
    chmodSync(join(dir, 'present'), 0o755);
    writeFileSync(join(dir, 'not-executable'), '');
    const m = machine({ path: `${dir}:`, isRoot: false, exists: (p) => p === '/here' });
    assert.deepEqual(missingNeeds({ root: true, built: true, tools: ['present', 'absent', 'not-executable'], files: ['/here', '/gone'] }, m), [
      'root',
      `${WEFT} (run ./build.sh)`,
      `${WEFT_NET} (run ./build.sh)`,
      'absent (not on PATH)',
      'not-executable (not on PATH)',
      '/gone',
    ]);
    assert.deepEqual(missingNeeds({ root: true, built: true, tools: ['present'], files: ['/here'] }, machine({ path: dir })), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('without CI a missing need is a skip reason; with CI it is an error naming it', () => {
  assert.equal(needs({ tools: ['containerd'] }, machine({ path: '' })), 'needs containerd (not on PATH)');
  for (const ci of ['true', '1', 'yes']) {
    assert.throws(() => needs({ tools: ['containerd'] }, machine({ path: '', ci })), (e: unknown) => e instanceof MissingNeedError && /CI is set and this suite needs containerd \(not on PATH\)/.test(e.message));
  }
  for (const ci of ['', '0', 'false', 'FALSE']) assert.equal(inCi({ CI: ci }), false, `CI=${ci}`);
  assert.equal(needs({ root: true }, machine({ ci: 'true' })), undefined, 'nothing missing: runs, in CI or not');
});

test('a suite run by node --test: skipped with the reason on a laptop, failed naming the program under CI', () => {
  const fixture = join(ROOT, 'test/helpers/fixtures/needs-suite.ts');
  const run = (ci: string | undefined) =>
    spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=spec', fixture], {
      cwd: ROOT,
      encoding: 'utf8',
      env: { PATH: process.env.PATH, NEEDS_TOOL: 'weft-test-no-such-tool', ...(ci ? { CI: ci } : {}) },
      timeout: 60_000,
    });
  const laptop = run(undefined);
  assert.equal(laptop.status, 0, laptop.stdout + laptop.stderr);
  assert.match(laptop.stdout, /# needs weft-test-no-such-tool \(not on PATH\)/);
  const ci = run('true');
  assert.notEqual(ci.status, 0, 'CI fails');
  assert.match(ci.stdout + ci.stderr, /CI is set and this suite needs weft-test-no-such-tool \(not on PATH\)/);
});
