/**
 * Storms with faults, nothing lost (issue 11, item 6): pods added and deleted concurrently
 * through the real dist/weft-net on three hosts with real routers, while a router (in turn) is
 * killed with SIGKILL and restarted every FAULT_EVERY operations and one host is cut off from
 * the underlay and rejoined. The runtime's side follows the CNI spec: an ADD that failed is
 * followed by a DEL and tried again; a DEL is repeated until it succeeds.
 *
 * Afterwards: every pod still present has exactly one address, no address is held twice (in
 * the routers' records or on the pods' interfaces), no host veth without its pod, no allocation
 * without its pod, no release left in a spool, the hosts' rules as they were after start, and
 * pods on different hosts reach each other. Then a host is "rebooted" (its namespaces and
 * processes gone, its state directory kept): its router reclaims the addresses of the pods that
 * no longer exist when it starts.
 *
 * Short form by default (CI); `WEFT_STORM=long` runs the issue's full storm (1,000 operations,
 * a kill every 100). `WEFT_STORM_SEED` replays a run's choices (each run prints its seed).
 */
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { cniAsync, cniEnv, netConf, Netns, RouterProc, scope, sleep, uid, underlayHosts, until, type CniCall } from '../helpers/netns';
import { needs, NETNS } from '../helpers/needs';
import { hostVethName } from '../../src/common/api';
import { HOST_VETH_RE } from '../../src/datapath/pod-links';
import { seededRandom } from '../helpers/rng';

const run = promisify(execFile);
const skip = needs({ ...NETNS, tools: [...NETNS.tools!, 'nft', 'iptables-legacy-save', 'iptables-nft-save'] });
const LONG = process.env.WEFT_STORM === 'long';
const OPS = LONG ? 1000 : 200;
const FAULT_EVERY = LONG ? 100 : 50;
const CONCURRENCY = 12;
const NET = '172.31.41';
const NETWORK = 'weftnet';
const FAST = { WEFT_HEARTBEAT_MS: '500', WEFT_RETRY_MIN_MS: '200', WEFT_RETRY_MAX_MS: '1000', WEFT_SPOOL_MS: '500', WEFT_PROGRAM_MS: '1000', WEFT_PROBE_MS: '1000', WEFT_ORPHAN_GRACE_MS: '2000' };
/** How long a runtime keeps retrying one pod's ADD or DEL before the test calls it lost. */
const RETRY_DEADLINE_MS = 180_000;

interface Pod {
  id: string;
  host: number;
  ns: Netns;
  /** The address its last successful ADD gave it (A.B.C.D/P). */
  addr?: string;
}

const key = (p: Pod) => ({ network: NETWORK, containerId: p.id, ifname: 'eth0' });

/** Pod namespaces made without blocking the event loop (many are made while calls are in flight). */
async function podNs(tag: string): Promise<Netns> {
  const ns = new Netns(`${tag}-${uid()}`);
  await run('ip', ['netns', 'add', ns.name]);
  await run('ip', ['-n', ns.name, 'link', 'set', 'lo', 'up']);
  return ns;
}
async function dropNs(ns: Netns): Promise<void> {
  await run('ip', ['netns', 'del', ns.name]).catch(() => undefined);
}

/**
 * The host's rules, without counters and comments (those change with traffic and time), and
 * without the sleeve's per-peer rules (commented "weft sleeve PEER"): those follow which peers
 * the sleeve carries at the moment (a peer whose VXLAN probe fails while a host is cut off), not
 * the pods.
 */
function rules(h: Netns): string {
  const strip = (s: string) =>
    s
      .split('\n')
      .filter((l) => !l.startsWith('#') && !l.includes('weft sleeve '))
      .map((l) => l.replace(/\[\d+:\d+\]/g, '[]').replace(/counter packets \d+ bytes \d+/g, 'counter'))
      .join('\n');
  return ['iptables-nft-save', 'iptables-legacy-save'].map((c) => strip(h.run(c, []))).join('\n---\n') + '\n---\n' + strip(h.run('nft', ['list', 'ruleset']));
}

describe('storm: concurrent ADD/DEL on three hosts with kill -9 and a cut-off host; nothing lost', { skip, concurrency: false, timeout: LONG ? 3_600_000 : 900_000 }, () => {
  const { track, defer, cleanup } = scope();
  after(cleanup);
  const hs = skip ? Object.assign([], { ul: undefined as never }) : underlayHosts('wst', 3, NET, track);
  const routers: RouterProc[] = [];
  const pods = new Map<string, Pod>();
  defer(async () => {
    for (const p of pods.values()) await dropNs(p.ns);
  });
  const baseline: string[] = [];
  const conf = (h: number) => netConf(routers[h]!.socket);
  const established = (r: RouterProc) => r.report().mesh.connections.filter((c: any) => c.state === 'established').length;
  const meshed = () => until(() => routers.every((r) => r.running && established(r) === 2), 60_000, 250);
  const podAttachments = (h: number) => routers[h]!.report().ipam.attachments.filter((a: any) => a.network !== '_gateway');
  const hostVeths = (h: number) => hs[h]!.links().map((l) => l.ifname).filter((n) => HOST_VETH_RE.test(n)).sort();
  const spoolLeft = (h: number) => {
    const d = join(routers[h]!.stateDir, 'pending-release');
    return existsSync(d) ? readdirSync(d).length : 0;
  };

  /** Everything the storm and the reboot leave must agree with the pods the test holds. */
  const assertConsistent = async (label: string) => {
    const live = [...pods.values()];
    for (let h = 0; h < 3; h++) {
      const want = live.filter((p) => p.host === h);
      const ids = podAttachments(h).map((a: any) => a.containerId).sort();
      assert.deepEqual(ids, want.map((p) => p.id).sort(), `${label}: host ${h + 1}'s IPAM lists exactly its live pods`);
      const veths = want.map((p) => hostVethName(key(p))).sort();
      // DEL answers once the host end is off the wire; its deletion follows in the background
      assert.ok(await until(() => JSON.stringify(hostVeths(h)) === JSON.stringify(veths), 30_000, 200), `${label}: host ${h + 1} has a veth for each live pod and no other (${hostVeths(h).length} veths, ${veths.length} pods)`);
      assert.ok(await until(() => spoolLeft(h) === 0, 30_000, 200), `${label}: host ${h + 1}'s release spool is applied`);
    }
    // no address twice: the routers' records, gateways included, across the three hosts
    const held = routers.flatMap((r) => r.report().ipam.attachments.map((a: any) => String(a.address).split('/')[0]));
    const twice = held.filter((a, i) => held.indexOf(a) !== i);
    assert.deepEqual(twice, [], `${label}: addresses held twice in the routers' records`);
    // and on the wire: each live pod has exactly its one address
    const onWire: string[] = [];
    for (const p of live) {
      const addrs = p.ns.addrs('eth0');
      assert.deepEqual(addrs, [p.addr], `${label}: pod ${p.id} on host ${p.host + 1} has exactly the address ADD gave it`);
      onWire.push(addrs[0]!.split('/')[0]!);
    }
    assert.equal(new Set(onWire).size, onWire.length, `${label}: no address on two pods`);
    for (let h = 0; h < 3; h++) assert.equal(rules(hs[h]!), baseline[h], `${label}: host ${h + 1}'s rules are as they were after start`);
  };

  test('three routers agree on the ring; the rules are recorded', async () => {
    for (let i = 0; i < 3; i++) {
      const peers = [0, 1, 2].filter((j) => j !== i).map((j) => `${NET}.${j + 1}`);
      const r = track(new RouterProc(hs[i]!, ['--advertise-addr', `${NET}.${i + 1}`, '--peers', peers.join(','), '--ipalloc-init', 'consensus=3', '--nickname', `st${i + 1}`], undefined, false));
      r.env = FAST;
      routers.push(r);
    }
    await Promise.all(routers.map((r) => r.start()));
    assert.ok(await meshed(), 'full mesh of three');
    assert.ok(await until(() => routers.every((r) => r.report().ipam.status === 'ready'), 30_000, 250), 'IPAM ready everywhere');
    // the gateways are claimed on the first ADD; one pod per host settles the rules' final form
    const first = await Promise.all([0, 1, 2].map(async (h) => {
      const p: Pod = { id: `warm-${h}`, host: h, ns: await podNs('wstp') };
      pods.set(p.id, p);
      const r = await cniAsync(hs[h]!, cniEnv('ADD', p.id, p.ns.path), conf(h));
      assert.equal(r.code, 0, r.stdout + r.stderr);
      p.addr = r.json.ips[0].address;
      return p;
    }));
    assert.equal(first.length, 3);
    for (let h = 0; h < 3; h++) baseline[h] = rules(hs[h]!);
  });

  test(`${OPS} operations, ${CONCURRENCY} at a time, a router killed with -9 every ${FAULT_EVERY} and restarted, one host cut off and rejoined`, async (t) => {
    const seed = Number(process.env.WEFT_STORM_SEED ?? Math.floor(Math.random() * 2 ** 31));
    t.diagnostic(`seed ${seed} (WEFT_STORM_SEED=${seed} replays the choices)`);
    const rand = seededRandom(seed);
    const stats = { adds: 0, dels: 0, addFailures: 0, delFailures: 0, kills: 0, failureCodes: new Map<string, number>() };
    const cutHost = 1;
    const cutAt = Math.floor(OPS * 0.3);
    const rejoinAt = Math.floor(OPS * 0.6);
    const live: Pod[] = [...pods.values()];
    let issued = 0;
    let faults: Promise<void> = Promise.resolve();
    let faultError: unknown;
    const t0 = Date.now();
    const failed = (r: CniCall) => {
      const what = `${r.json?.code ?? `exit ${r.code}`}: ${String(r.json?.msg ?? r.stderr).replace(/\/tmp\/weft-test-\w+\/weft\.sock/g, 'SOCKET').replace(/\d+/g, 'N').slice(0, 90)}`;
      stats.failureCodes.set(what, (stats.failureCodes.get(what) ?? 0) + 1);
    };

    /** CNI calls in flight per host: a kill waits for some, so it lands inside requests. */
    const inflight = [0, 0, 0];
    const call = async (p: Pod, verb: 'ADD' | 'DEL') => {
      inflight[p.host]!++;
      try {
        return await cniAsync(hs[p.host]!, cniEnv(verb, p.id, p.ns.path), conf(p.host));
      } finally {
        inflight[p.host]!--;
      }
    };
    /** DEL until it succeeds, as the spec asks of a runtime. */
    const del = async (p: Pod) => {
      const end = Date.now() + RETRY_DEADLINE_MS;
      for (;;) {
        const r = await call(p, 'DEL');
        if (r.code === 0) return;
        stats.delFailures++;
        failed(r);
        if (Date.now() > end) throw new Error(`DEL of ${p.id} on host ${p.host + 1} kept failing: ${r.stdout}${r.stderr}`);
        await sleep(250);
      }
    };
    /** ADD; after a failure DEL, then ADD again. */
    const add = async (p: Pod) => {
      const end = Date.now() + RETRY_DEADLINE_MS;
      for (;;) {
        const r = await call(p, 'ADD');
        if (r.code === 0) {
          p.addr = r.json.ips[0].address;
          return;
        }
        stats.addFailures++;
        failed(r);
        await del(p);
        if (Date.now() > end) throw new Error(`ADD of ${p.id} on host ${p.host + 1} kept failing: ${r.stdout}${r.stderr}`);
        await sleep(250);
      }
    };
    const fault = (n: number) => {
      const h = (n / FAULT_EVERY - 1) % 3;
      const r = routers[h]!;
      const jitter = rand() * 150;
      faults = faults.then(async () => {
        // into calls in flight: once two are under way (the plugin takes a while to start), after a jitter
        await until(() => inflight[h]! >= 2, 10_000, 2);
        await sleep(jitter);
        await r.kill('SIGKILL');
        stats.kills++;
        await r.start(60_000);
      }).catch((e) => void (faultError ??= e));
    };
    const worker = async () => {
      while (issued < OPS && faultError === undefined) {
        const n = ++issued;
        if (n % FAULT_EVERY === 0) fault(n);
        if (n === cutAt) hs.ul.run('ip', ['link', 'set', `p${cutHost + 1}`, 'down']);
        if (n === rejoinAt) hs.ul.run('ip', ['link', 'set', `p${cutHost + 1}`, 'up']);
        if (live.length > 0 && rand() < 0.45) {
          const p = live.splice(Math.floor(rand() * live.length), 1)[0]!;
          await del(p);
          stats.dels++;
          pods.delete(p.id);
          await dropNs(p.ns);
        } else {
          const p: Pod = { id: `st-${n}`, host: Math.floor(rand() * 3), ns: await podNs('wstp') };
          pods.set(p.id, p);
          await add(p);
          stats.adds++;
          live.push(p);
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    await faults;
    if (faultError) throw faultError;
    const seconds = (Date.now() - t0) / 1000;
    t.diagnostic(
      `storm: ${issued} operations (${stats.adds} ADD, ${stats.dels} DEL) in ${seconds.toFixed(1)} s, ${stats.kills} routers killed with -9 and restarted, host ${cutHost + 1} cut off from operation ${cutAt} to ${rejoinAt}; ` +
        `${stats.addFailures} ADD and ${stats.delFailures} DEL calls failed and were retried: ${JSON.stringify([...stats.failureCodes])}; ${pods.size} pods left`,
    );
    const logged = (what: string) => routers.reduce((n, r) => n + r.log.split('\n').filter((l) => l.includes(`"${what}"`)).length, 0);
    t.diagnostic(`routers' logs: ${logged('released from spool')} releases recorded by the plugin applied, ${logged('released at start: its pod is gone')} allocations without a pod released at a start`);
    assert.equal(issued, OPS);
    assert.equal(stats.kills, Math.floor(OPS / FAULT_EVERY), 'every fault happened');
    assert.ok(stats.addFailures > 0, 'the faults hit operations in flight (some ADDs failed and were retried)');
    assert.ok(await meshed(), 'the mesh is whole again after the faults and the rejoin');
    await assertConsistent('after the storm');

    // pods on different hosts still reach each other (a sample of pairs)
    const byHost = [0, 1, 2].map((h) => [...pods.values()].filter((p) => p.host === h));
    const pairs: [Pod, Pod][] = [];
    for (let h = 0; h < 3; h++) for (let k = 0; k < 2; k++) {
      const a = byHost[h]![k];
      const b = byHost[(h + 1 + k) % 3]![k];
      if (a && b) pairs.push([a, b]);
    }
    assert.ok(pairs.length >= 3, `a sample of cross-host pairs (${pairs.length})`);
    for (const [a, b] of pairs) {
      assert.ok(await until(() => a.ns.ping(b.addr!.split('/')[0]!), 30_000, 500), `${a.id} (host ${a.host + 1}) reaches ${b.id} (host ${b.host + 1})`);
    }

    // the rest deleted: IPAM lists the gateways alone, and no veth is left
    const rest = [...pods.values()];
    let next = 0;
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (next < rest.length) {
        const p = rest[next++]!;
        await del(p);
        pods.delete(p.id);
        await dropNs(p.ns);
      }
    }));
    await assertConsistent('after every DEL');
    for (let h = 0; h < 3; h++) assert.deepEqual(podAttachments(h), [], `host ${h + 1}: no allocation left`);
  });

  test('a rebooted host (namespaces and router gone, state directory kept) releases the addresses of pods that no longer exist when its router starts', async (t) => {
    const h = 0;
    const r = routers[h]!;
    const name = r.report().router.name;
    // every pod of the host goes in the reboot: five new ones, and any the storm left there
    const gone: Pod[] = [...pods.values()].filter((p) => p.host === h);
    for (let i = 0; i < 5; i++) {
      const p: Pod = { id: `boot-${i}`, host: h, ns: await podNs('wstp') };
      pods.set(p.id, p);
      const res = await cniAsync(hs[h]!, cniEnv('ADD', p.id, p.ns.path), conf(h));
      assert.equal(res.code, 0, res.stdout + res.stderr);
      p.addr = res.json.ips[0].address;
      gone.push(p);
    }
    // a survivor on another host, to show the reboot touches nothing else
    const other: Pod = { id: 'boot-other', host: 2, ns: await podNs('wstp') };
    pods.set(other.id, other);
    const o = await cniAsync(hs[2]!, cniEnv('ADD', other.id, other.ns.path), conf(2));
    assert.equal(o.code, 0, o.stdout);
    other.addr = o.json.ips[0].address;
    assert.equal(podAttachments(h).length, gone.length);

    // the reboot: the router dies, every namespace of the host goes, the host comes back bare
    await r.kill('SIGKILL');
    for (const p of gone) {
      await dropNs(p.ns);
      pods.delete(p.id);
    }
    const host = hs[h]!;
    host.destroy();
    // the kernel dismantles a namespace in the background: its uplink's other end goes with it
    assert.ok(await until(() => !hs.ul.tryRun('ip', ['link', 'show', `p${h + 1}`]).ok, 30_000, 100), 'the old host namespace is gone');
    await run('ip', ['netns', 'add', host.name]);
    host.run('ip', ['link', 'set', 'lo', 'up']);
    hs.ul.run('ip', ['link', 'add', `p${h + 1}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', host.path]);
    hs.ul.run('ip', ['link', 'set', `p${h + 1}`, 'master', 'ul0', 'up']);
    host.run('ip', ['addr', 'add', `${NET}.${h + 1}/24`, 'dev', 'eth0']);
    host.run('ip', ['link', 'set', 'eth0', 'up']);
    assert.equal(host.links().filter((l) => l.ifname === 'weave').length, 0, 'the host came back without a bridge');
    assert.ok(existsSync(join(r.stateDir, 'ipam.json')), 'the state directory was kept');

    const logFrom = r.log.length; // the log holds every run of this router; count this run's lines
    await r.start(60_000);
    assert.equal(r.report().router.name, name, 'the same peer, from its state directory');
    // released before the API answers when older than the grace (WEFT_ORPHAN_GRACE_MS), else once it has passed
    assert.ok(await until(() => podAttachments(h).length === 0, 30_000, 200), `the gone pods' allocations were released at start: ${JSON.stringify(podAttachments(h))}`);
    const reclaimed = r.log.slice(logFrom).split('\n').filter((l) => l.includes('"released at start: its pod is gone"'));
    t.diagnostic(`router log: ${reclaimed.length} releases at start`);
    assert.deepEqual(reclaimed.map((l) => JSON.parse(l).containerId).sort(), gone.map((p) => p.id).sort(), 'each release is logged once, naming its pod');
    // durably: a second start finds them gone too
    await r.kill('SIGTERM');
    await r.start(60_000);
    assert.deepEqual(podAttachments(h), []);

    // the host serves pods again, reaching the survivor on another host
    assert.ok(await meshed(), 'the rebooted host rejoins the mesh');
    const fresh: Pod = { id: 'boot-fresh', host: h, ns: await podNs('wstp') };
    pods.set(fresh.id, fresh);
    const f = await cniAsync(hs[h]!, cniEnv('ADD', fresh.id, fresh.ns.path), conf(h));
    assert.equal(f.code, 0, f.stdout + f.stderr);
    fresh.addr = f.json.ips[0].address;
    assert.ok(await until(() => fresh.ns.ping(other.addr!.split('/')[0]!), 30_000, 500), 'the new pod reaches a pod on another host');
    assert.deepEqual(podAttachments(2).map((a: any) => a.containerId), ['boot-other'], 'the other host kept its pod');
    await assertConsistent('after the reboot');
  });
});
