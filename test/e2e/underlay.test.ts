/**
 * The chained 3-host join with routers that find their underlay themselves (no
 * --advertise-addr), on hosts with and without a default route: `weft sandbox up --join chain
 * --underlay discover [--no-default-route]`, the real CLI. host3 is given only host2 and host2
 * only host1, so the mesh closes only if each router publishes an underlay it found itself.
 * (A host with no route at all to its peers is test/netns/underlay.test.ts.)
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Netns, uid, WEFT } from '../helpers/netns';
import { needs, NETNS } from '../helpers/needs';
import { eventually, namespacesWith } from '../helpers/sandbox';
import { Sandbox } from '../../src/sandbox';

const skip = needs(NETNS);
const weft = (args: string[], timeout = 180_000) => spawnSync(WEFT, ['sandbox', ...args], { encoding: 'utf8', timeout });

interface StatusJson {
  hosts: { nickname: string; netns: string; alive: boolean; peers?: number; established?: number }[];
}

for (const defaultRoute of [true, false]) {
  const name = defaultRoute ? 'with default routes' : 'without default routes';
  describe(`chained join, routers discover their underlay, hosts ${name}`, { skip, concurrency: false, timeout: 300_000 }, () => {
    const prefix = `wseu${defaultRoute ? 'd' : 'n'}${uid().slice(0, 4)}`;
    let up: ReturnType<typeof weft>;
    before(() => {
      up = weft(['up', '--hosts', '3', '--pods', '2', '--join', 'chain', '--underlay', 'discover', ...(defaultRoute ? [] : ['--no-default-route']), '--prefix', prefix, '--wait', '60']);
    });
    after(() => {
      const d = weft(['down', '--prefix', prefix]);
      assert.equal(d.status, 0, d.stderr + d.stdout);
      assert.deepEqual(namespacesWith(prefix), []);
    });

    test('the sandbox came up, its hosts have a default route or none, no router was given its address', async () => {
      assert.equal(up.status, 0, up.stderr + up.stdout);
      const sb = await Sandbox.open({ prefix });
      assert.equal(sb.hosts.length, 3);
      for (const h of sb.hosts) {
        assert.ok(!h.routerArgv.includes('--advertise-addr'), h.routerArgv.join(' '));
        const dflt = new Netns(h.netns).run('ip', ['-4', 'route', 'show', 'default']).trim();
        if (defaultRoute) assert.match(dflt, /^default dev eth0/, h.netns);
        else assert.equal(dflt, '', `${h.netns} has no default route`);
      }
      // each host is told of the one before it only
      const peersOf = (argv: string[]) => (argv.includes('--peers') ? argv[argv.indexOf('--peers') + 1] : undefined);
      assert.deepEqual(sb.hosts.map((h) => peersOf(h.routerArgv)), [undefined, '172.30.0.11', '172.30.0.12']);
    });

    test('6 connections: every router has 3 peers and 2 established connections', async () => {
      const status = () => JSON.parse(weft(['status', '--prefix', prefix, '--json']).stdout) as StatusJson;
      const full = () => status().hosts.every((h) => h.alive && h.peers === 3 && h.established === 2);
      assert.ok(await eventually(async () => full(), 30_000), JSON.stringify(status().hosts));
      assert.equal(status().hosts.reduce((n, h) => n + (h.established ?? 0), 0), 6);
    });

    test('each router found its underlay the way its host allows', async () => {
      const sb = await Sandbox.open({ prefix });
      const rs = await sb.reports();
      const found = rs.map((r) => (r instanceof Error ? r.message : r.router.underlay));
      const expect = (i: number) => ({
        iface: 'eth0',
        ip: `172.30.0.${11 + i}`,
        mtu: 1500,
        // host1 is given no peer: with no default route it learns its address from a peer's connection
        how: defaultRoute ? 'default route' : i === 0 ? 'address a peer reached' : 'route to peers',
      });
      assert.deepEqual(found, [0, 1, 2].map(expect));
    });

    test('every pod reaches every other pod, across hosts too', async () => {
      assert.match(up.stdout, /connectivity: 30\/30 pings ok, all ok \(same host 6\/6, across hosts 24\/24\)/);
      const sb = await Sandbox.open({ prefix });
      const m = await sb.pingMatrix();
      assert.deepEqual(m.duplicates, []);
      assert.equal(m.pinged, 30);
      assert.deepEqual(m.crossHost, { ok: 24, total: 24 });
      assert.deepEqual(m.sameHost, { ok: 6, total: 6 });
    });
  });
}
