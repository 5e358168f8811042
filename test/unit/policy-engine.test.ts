/** The engine's update logic against a recording stand-in for nft (no root, no kernel). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PolicyEngine } from '../../src/policy/engine';
import { parseNamespace, parseNetworkPolicy, parsePod, type PolicyInput } from '../../src/policy/model';
import type { Nft } from '../../src/sys/nft';
import { memoryLogger } from '../helpers/policy-lab';

class FakeNft {
  scripts: string[] = [];
  other: string[][] = [];
  failNext = 0;
  tableExists = true;
  async apply(script: string) {
    if (this.failNext > 0) {
      this.failNext--;
      throw new Error('nft: Could not process rule: Device or resource busy');
    }
    this.scripts.push(script);
  }
  async version() {
    return 'nftables v1.0.6';
  }
  async hasTable() {
    return this.tableExists;
  }
  async counters() {
    return new Map();
  }
  async json(args: string[]) {
    this.other.push(args);
    return [];
  }
  async listSet() {
    return undefined;
  }
}

function input(policies: unknown[], extraPods = 0): PolicyInput {
  return {
    namespaces: [parseNamespace({ metadata: { name: 'x' } })],
    pods: Array.from({ length: 2 + extraPods }, (_, i) =>
      parsePod({ metadata: { namespace: 'x', name: `p${i}`, labels: { app: i === 0 ? 'a' : 'b' } }, status: { podIP: `10.0.0.${i + 2}` } }),
    ),
    policies: policies.map(parseNetworkPolicy),
    local: [{ ip: '10.0.0.2', namespace: 'x', name: 'p0' }],
    nodeAddresses: ['10.0.0.1'],
  };
}
const deny = { metadata: { namespace: 'x', name: 'deny' }, spec: { podSelector: { matchLabels: { app: 'a' } } } };
const allowB = { metadata: { namespace: 'x', name: 'allow-b' }, spec: { podSelector: {}, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'b' } } }], ports: [{ port: 80 }] }] } };

function engine(nft: FakeNft, init = {}) {
  const seconds: number[] = [];
  const e = new PolicyEngine({ log: memoryLogger(), nft: nft as unknown as Nft, enforced: (s) => seconds.push(s) }, { verifyMs: 3_600_000, blockedPollMs: 0, debounceMs: 20, maxDelayMs: 200, ...init });
  return { e, seconds };
}

test('start and stop leave the kernel alone: the previous rules stay until the first update', async () => {
  const nft = new FakeNft();
  const { e } = engine(nft);
  await e.start();
  assert.equal((await e.status()).keptFromBefore, true);
  await e.stop();
  assert.deepEqual(nft.scripts, []);
});

test('updates close together are applied as one transaction; the first writes everything, later ones only what changed', async () => {
  const nft = new FakeNft();
  const { e, seconds } = engine(nft);
  await e.start();
  const first = [e.update(input([])), e.update(input([deny])), e.update(input([deny, allowB]))];
  await Promise.all(first);
  assert.equal(nft.scripts.length, 1, 'three updates, one transaction');
  assert.match(nft.scripts[0]!, /^add table bridge weft_policy$/m);
  assert.match(nft.scripts[0]!, /^flush set bridge weft_policy in_pod_port$/m);
  assert.match(nft.scripts[0]!, /add element bridge weft_policy in_pod_port \{ 10\.0\.0\.2 \. 10\.0\.0\.3 \. 6 \. 80 \}/);
  assert.equal(seconds.length, 1);
  // a pod joins app=b: exactly its element is added, nothing else is written
  await e.update(input([deny, allowB], 1));
  assert.equal(nft.scripts.length, 2);
  assert.equal(nft.scripts[1], 'add element bridge weft_policy in_pod_port { 10.0.0.2 . 10.0.0.4 . 6 . 80 }\n');
  const st = await e.status();
  assert.equal(st.lastApply?.kind, 'diff');
  assert.equal(st.lastApply?.changes, 1);
  // the same state again: nothing to write
  await e.update(input([deny, allowB], 1));
  assert.equal(nft.scripts.length, 2);
  assert.equal((await e.status()).lastApply?.kind, 'none');
  // a policy removed: its elements are deleted
  await e.update(input([deny], 1));
  assert.match(nft.scripts[2]!, /^delete element bridge weft_policy in_pod_port \{ 10\.0\.0\.2 \. 10\.0\.0\.3 \. 6 \. 80, 10\.0\.0\.2 \. 10\.0\.0\.4 \. 6 \. 80 \}$/m);
  await e.stop();
});

test('a refused apply rejects its update and is retried with the latest state', async () => {
  const nft = new FakeNft();
  const { e } = engine(nft);
  await e.start();
  // both the in-place write and the replacement fail once each
  nft.failNext = 2;
  await assert.rejects(e.update(input([deny])), /Device or resource busy/);
  assert.match((await e.status()).lastError ?? '', /busy/);
  const deadline = Date.now() + 5000;
  while (nft.scripts.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(nft.scripts.length, 1, 'retried after the back-off');
  assert.match(nft.scripts[0]!, /add element bridge weft_policy ingress_isolated \{ 10\.0\.0\.2 \}/);
  assert.equal((await e.status()).lastError, undefined);
  await e.stop();
});

test('a table the in-place write cannot update is replaced in the same transaction', async () => {
  const nft = new FakeNft();
  const { e } = engine(nft);
  await e.start();
  nft.failNext = 1;
  await e.update(input([deny]));
  assert.equal(nft.scripts.length, 1);
  assert.match(nft.scripts[0]!, /^add table bridge weft_policy\ndelete table bridge weft_policy\nadd table bridge weft_policy\n/);
  await e.stop();
});

test('updates that never stop coming are still applied (the debounce has a ceiling)', { timeout: 20_000 }, async () => {
  const nft = new FakeNft();
  const { e } = engine(nft, { debounceMs: 100, maxDelayMs: 300 });
  await e.start();
  let issued = 0;
  const first = e.update(input([deny]));
  // one update every 20 ms, each inside the 100 ms debounce of the one before, until stopped
  const timer = setInterval(() => {
    issued++;
    void e.update(input([deny, allowB])).catch(() => undefined);
  }, 20);
  await first;
  clearInterval(timer);
  assert.ok(issued > 1, 'the stream of updates was still going');
  assert.equal(nft.scripts.length, 1);
  await e.stop();
});
