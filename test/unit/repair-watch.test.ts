import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { Repair } from '../../src/router/repair';
import { createLogger } from '../../src/common/log';

/** Lets the pass's promise chain run between timer ticks. */
const flush = async () => {
  for (let i = 0; i < 10; i++) await Promise.resolve();
};

test('a report of links, addresses or rules brings a repair pass; one of forwarding entries does not', async () => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 });
  try {
    let passes = 0;
    const listeners: ((c: { source: 'ip' | 'bridge' | 'nft' }) => void)[] = [];
    const report = (source: 'ip' | 'bridge' | 'nft') => listeners.forEach((fn) => fn({ source }));
    const r = new Repair(
      {
        host: { verify: async () => (passes++, undefined), verifyRules: async () => undefined, invalidate: () => undefined, setup: async () => undefined },
        bridge: { restore: async () => undefined },
        dataPath: { verify: async () => [], repair: async () => undefined, ready: true },
        watch: { watching: true, onChange: (fn) => void listeners.push(fn) },
        log: createLogger({ name: 'test', level: 'silent' }),
      },
      { everyMs: 1000, idleMs: 60_000 },
    );
    await r.start();
    // quiet: passes at 1, 3, 7, 15 s (the gap doubles while they find nothing)
    for (let t = 0; t < 16_000; t += 100) {
      mock.timers.tick(100);
      await flush();
    }
    assert.equal(passes, 4);
    // the overlays' own forwarding entries, reported while the next pass is 15 s away
    for (let t = 0; t < 5_000; t += 100) {
      report('bridge');
      mock.timers.tick(100);
      await flush();
    }
    assert.equal(passes, 4, 'forwarding entries bring no pass');
    for (const source of ['ip', 'nft'] as const) {
      report(source);
      for (let t = 0; t < 1_000; t += 100) {
        mock.timers.tick(100);
        await flush();
      }
    }
    assert.equal(passes, 6, 'a link or a rule reported brings one within a second');
    await r.stop();
  } finally {
    mock.timers.reset();
  }
});
