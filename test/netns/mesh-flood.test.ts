/**
 * A flood of idle connections on TCP 6783 cannot cut a host off its mesh: three host
 * namespaces on an underlay bridge of the test's own; host 3 holds 300 silent connections
 * open on host 1's mesh port (opening a new one whenever the router drops one) while host 2's
 * router joins and a pod is added on host 1.
 */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { cni, cniEnv, netConf, Netns, RouterProc, scope, underlayHosts, until } from '../helpers/netns';
import { needs, NETNS } from '../helpers/needs';

const skip = needs(NETNS);
// heartbeats far apart: only the handshake deadline and the pending limits may drop the idle ones
const FAST = { WEFT_HEARTBEAT_MS: '60000', WEFT_RETRY_MIN_MS: '200', WEFT_RETRY_MAX_MS: '1000' };

const FLOOD = `
const net = require('node:net');
let open = 0, opened = 0;
const one = () => {
  const s = net.connect(6783, process.argv[1]);
  s.on('connect', () => { open++; opened++; });
  s.on('error', () => {});
  s.on('close', () => { open = Math.max(0, open - 1); setTimeout(one, 5); });
  s.resume();
};
for (let i = 0; i < 300; i++) one();
setInterval(() => process.stdout.write(JSON.stringify({ open, opened }) + '\\n'), 200);
`;

describe('mesh under a flood of idle connections', { skip, concurrency: false, timeout: 120_000 }, () => {
  const { track, defer, cleanup } = scope();
  after(cleanup);

  test('300 idle connections held on 6783: a new router still joins, and an ADD answers', async () => {
    const hs = underlayHosts('wfl', 3, '172.31.10', track);
    const r1 = track(new RouterProc(hs[0]!, ['--advertise-addr', '172.31.10.1', '--nickname', 'one']));
    r1.env = FAST;
    await r1.start();

    let last = { open: 0, opened: 0 };
    const flood: ChildProcess = spawn('nsenter', [`--net=${hs[2]!.path}`, '--', process.execPath, '-e', FLOOD, '172.31.10.1'], { stdio: ['ignore', 'pipe', 'inherit'] });
    defer(() => flood.kill('SIGKILL'));
    flood.stdout!.on('data', (d: Buffer) => {
      const lines = d.toString().trim().split('\n');
      last = JSON.parse(lines[lines.length - 1]!);
    });
    assert.ok(await until(() => last.opened >= 300, 15_000), `the flood got its connections open: ${JSON.stringify(last)}`);

    const r2 = track(new RouterProc(hs[1]!, ['--advertise-addr', '172.31.10.2', '--nickname', 'two', '--peers', '172.31.10.1']));
    r2.env = FAST;
    await r2.start();
    const joined = () => {
      const a = r1.report().mesh.connections.filter((c: any) => c.state === 'established' && c.nickname === 'two');
      const b = r2.report().mesh.connections.filter((c: any) => c.state === 'established' && c.nickname === 'one');
      return a.length === 1 && b.length === 1;
    };
    assert.ok(await until(joined, 20_000), 'host 2 joined host 1 despite the flood');
    assert.ok(last.opened > 300, `the router dropped idle connections and the flood kept reopening them: ${JSON.stringify(last)}`);

    const pod = track(Netns.create('wfl-pod'));
    const add = cni(hs[0], cniEnv('ADD', 'flood-pod', pod.path), netConf(r1.socket));
    assert.equal(add.code, 0, add.stdout);
    assert.match(add.json.ips[0].address, /^10\.\d+\.\d+\.\d+\/12$/);
    assert.equal(r2.report().ipam.status, 'ready', 'host 2 got the ring from host 1');
  });
});
