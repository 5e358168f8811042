/**
 * Hosts without a default route (on-premise, air-gapped): no --advertise-addr, no default
 * route. A router with no way to find its underlay says so (/readyz 503, status), never runs
 * silently without a data path; it finds it through the route to its peers, or learns it from
 * the first peer that connects.
 */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { httpGet, RouterProc, scope, underlayHosts, until, weftCli } from '../helpers/netns';
import { needs, NETNS } from '../helpers/needs';

const skip = needs(NETNS);
const FAST = { WEFT_HEARTBEAT_MS: '300', WEFT_RETRY_MIN_MS: '200', WEFT_RETRY_MAX_MS: '1000', WEFT_UNDERLAY_RETRY_MS: '300', WEFT_PROGRAM_MS: '300' };

describe('underlay discovery without a default route', { skip, concurrency: false, timeout: 120_000 }, () => {
  const { track, cleanup } = scope();
  after(cleanup);

  test('no underlay: 503 naming the cause; learnt from the first peer; a peer-given host finds it by route', async () => {
    const [h1, h2] = underlayHosts('wun', 2, '172.31.11', track);
    for (const h of [h1!, h2!]) assert.equal(h.run('ip', ['-4', 'route', 'show', 'default']).trim(), '', 'no default route');
    const r1 = track(new RouterProc(h1!, ['--nickname', 'one'], undefined, false));
    r1.env = FAST;
    await r1.start();
    const ready1 = () => httpGet(h1!, 'http://127.0.0.1:6782/readyz');
    const before = ready1();
    assert.equal(before.status, 503);
    assert.match(JSON.parse(before.body).missing.join(';'), /no data path to other hosts: no underlay found: no default route and no peers/);
    assert.match(weftCli(r1.socket, ['status']).out, /DataPath: none: no underlay: no default route and no peers/);
    assert.equal(r1.report().router.underlay, undefined);

    // host 2 has no default route either, but it was given a peer: the route to it is the underlay
    const r2 = track(new RouterProc(h2!, ['--nickname', 'two', '--peers', '172.31.11.1'], undefined, false));
    r2.env = FAST;
    await r2.start();
    assert.deepEqual(r2.report().router.underlay, { iface: 'eth0', ip: '172.31.11.2', mtu: 1500, how: 'route to peers' });
    // host 1 learns its own from the connection host 2 made
    assert.ok(await until(() => r1.report().router.underlay?.ip === '172.31.11.1', 10_000), 'host 1 learnt its underlay');
    assert.equal(r1.report().router.underlay.how, 'address a peer reached');
    assert.ok(await until(() => ready1().status === 200, 10_000), `ready once it has a data path: ${ready1().body}`);
    assert.match(weftCli(r1.socket, ['status']).out, /DataPath: eth0 172\.31\.11\.1 \(address a peer reached\), pod MTU 1450/);
    // both publish their underlay, so each programs the other into its VXLAN table
    const fdb = (h: typeof h1, ip: string) => h!.run('bridge', ['fdb', 'show', 'dev', 'vxlan-6784']).includes(`dst ${ip}`);
    assert.ok(await until(() => fdb(h1, '172.31.11.2') && fdb(h2, '172.31.11.1'), 10_000), 'forwarding entries both ways');
  });
});
