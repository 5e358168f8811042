/**
 * Reads shared within a repair pass (src/sys/shared-reads.ts), against the real iptables and
 * iproute2 in a namespace of the test's own: one read of every table and every link per pass,
 * which never hides a write made through src/sys, nor what changed once the pass is over.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Netns } from '../helpers/netns';
import { needs, NETNS } from '../helpers/needs';
import { detectBackend, Iptables, type ChainSpec } from '../../src/sys/iptables';
import { sharedReads } from '../../src/sys/shared-reads';
import { ensureBridge, getLink } from '../../src/sys/link';

const spec = (rules: string[]): ChainSpec => ({ table: 'filter', chain: 'WEFT-T', from: 'FORWARD', rules });

test('reads inside sharedReads come from one save: a change made elsewhere shows after the pass, a write through the object at once', { skip: needs(NETNS) }, async () => {
  const ns = Netns.create('wt-ipt');
  try {
    const opts = { netns: ns.path };
    const ipt = new Iptables(await detectBackend(opts), opts);
    await ipt.apply([spec(['-s 10.1.0.0/16 -j ACCEPT'])]);
    assert.deepEqual(await ipt.missingJumps([spec([])]), []);
    assert.equal((await ipt.rules('filter', 'WEFT-T')).length, 1);

    await sharedReads(async () => {
      assert.equal((await ipt.rules('filter', 'WEFT-T')).length, 1);
      // someone else removes the jump and adds a rule: this pass keeps what it read
      ns.run(`iptables-${ipt.backend}`, ['-D', 'FORWARD', '-j', 'WEFT-T']);
      ns.run(`iptables-${ipt.backend}`, ['-A', 'WEFT-T', '-s', '10.2.0.0/16', '-j', 'ACCEPT']);
      assert.deepEqual(await ipt.missingJumps([spec([])]), [], 'the same save, shared');
      assert.equal((await ipt.rules('filter', 'WEFT-T')).length, 1);
      // a write through the object drops what was read
      await ipt.apply([spec(['-s 10.3.0.0/16 -j ACCEPT', '-s 10.4.0.0/16 -j ACCEPT'])]);
      assert.equal((await ipt.rules('filter', 'WEFT-T')).length, 2);
      assert.deepEqual(await ipt.missingJumps([spec([])]), [], 'apply put the jump back and the read saw it');
      ns.run(`iptables-${ipt.backend}`, ['-D', 'FORWARD', '-j', 'WEFT-T']);
    });
    assert.deepEqual(await ipt.missingJumps([spec([])]), ['filter/WEFT-T'], 'after the pass, a fresh save');

    await sharedReads(async () => {
      await ipt.remove([spec([])]);
      assert.deepEqual(await ipt.rules('filter', 'WEFT-T'), [], 'remove drops what was read');
    });
  } finally {
    ns.destroy();
  }
});

test('links inside sharedReads come from one listing: a link made elsewhere shows after the pass, one made through src/sys at once', { skip: needs(NETNS) }, async () => {
  const ns = Netns.create('wt-lnk');
  try {
    const opts = { netns: ns.path };
    await sharedReads(async () => {
      assert.equal((await getLink('lo', opts))?.ifname, 'lo');
      ns.run('ip', ['link', 'add', 'br-else', 'type', 'bridge']);
      assert.equal(await getLink('br-else', opts), undefined, 'the same listing, shared');
      await ensureBridge({ name: 'br-weft', mtu: 1400 }, opts);
      assert.equal((await getLink('br-weft', opts))?.mtu, 1400, 'a write through src/sys drops the listing');
      assert.equal((await getLink('br-else', opts))?.ifname, 'br-else');
    });
    ns.run('ip', ['link', 'del', 'br-else']);
    assert.equal(await getLink('br-else', opts), undefined, 'after the pass, read afresh');
    assert.equal((await getLink('br-weft', opts))?.linkinfo?.info_kind, 'bridge');
  } finally {
    ns.destroy();
  }
});
