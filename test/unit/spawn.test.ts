import { test } from 'node:test';
import assert from 'node:assert/strict';
import { run } from '../../src/sys/exec';
import { processesStarted } from '../../src/sys/spawn';
import { runCaptured } from '../../src/sys/process';

test('every process started through src/sys is counted under its command, failed ones too', async () => {
  const before = processesStarted();
  await run('true', []);
  await run('/bin/true', []);
  await assert.rejects(run('false', []));
  await runCaptured('true', []);
  const after = processesStarted();
  assert.equal((after.true ?? 0) - (before.true ?? 0), 3, 'true by name and by path, and through execa');
  assert.equal((after.false ?? 0) - (before.false ?? 0), 1);
  const counts = Object.values(after);
  assert.deepEqual(counts, [...counts].sort((a, b) => b - a), 'largest first');
});
