import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JsonStore } from '../../src/ipam/store';

test('commit writes the state as of the write; concurrent commits share writes', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-store-'));
  try {
    let n = 0;
    let writes = 0;
    const { store, data } = await JsonStore.open<{ n: number }>(dir, 's.json', () => {
      writes++;
      return { n };
    });
    assert.equal(data, undefined);
    const done = [];
    for (let i = 0; i < 50; i++) {
      n++;
      done.push(store.commit());
    }
    await Promise.all(done);
    assert.equal(JSON.parse(readFileSync(join(dir, 's.json'), 'utf8')).n, 50);
    assert.ok(writes <= 2, `50 commits took ${writes} writes`);
    assert.deepEqual(readdirSync(dir), ['s.json'], 'no temporary files left');
    const again = await JsonStore.open<{ n: number }>(dir, 's.json', () => ({ n: 0 }));
    assert.equal(again.data?.n, 50);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a corrupt state file is refused with its path, not silently replaced', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-store-'));
  try {
    const { writeFileSync } = await import('node:fs');
    writeFileSync(join(dir, 's.json'), '{torn');
    await assert.rejects(JsonStore.open(dir, 's.json', () => ({})), /s\.json is not valid JSON/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
