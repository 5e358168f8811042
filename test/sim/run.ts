/**
 * `npm run sim -- --peers 100,300,1000`: the mesh, gossip and ring IPAM of N routers in one
 * process, over an in-memory network, on a virtual clock (no sockets, no namespaces).
 *
 * For each size: routers start `--rate` per second (100 by default, so 1,000 over ten seconds: a
 * DaemonSet rolling out on that many nodes takes longer), each pointed at one earlier router
 * (`--join random`, the default) or all at the first (`--join seed`); the run ends when every
 * router knows every peer as reachable, all hold the same IPAM ring, and each has allocated one
 * address from space of its own. Then one more router joins the converged mesh, and what that
 * join cost every other router is measured (10 s of traffic from the join, less the same 10 s
 * one digest refresh period earlier). `--seed N` (1 by default; `random` for none) fixes Math.random,
 * so two runs of one size, say before and after a change, are the same run. Printed per size: virtual seconds and wall seconds
 * to convergence, bytes and frames sent per router (mean and max), heap per router, and the
 * join's cost per existing router (mean and max bytes received and sent).
 */
import { mock } from 'node:test';
import { parseArgs } from 'node:util';
import { setImmediate as realImmediate } from 'node:timers';
import { performance } from 'node:perf_hooks';
import { writeHeapSnapshot } from 'node:v8';
import { createLogger } from '../../src/common/log';
import { parseCidr } from '../../src/common/ip';
import { IpamService, type IpamInit } from '../../src/ipam/service';
import { Mesh } from '../../src/mesh/mesh';
import { MemNet } from './memnet';
import { seededRandom } from '../helpers/rng';

const log = createLogger({ name: 'sim', level: 'silent' });
/** How often each router sends its digests to every neighbour. */
const REFRESH_MS = 30_000;
const range = parseCidr('10.32.0.0/12')!;

interface Peer {
  i: number;
  name: string;
  ip: string;
  mesh: Mesh;
  ipam: IpamService;
  out: { bytes: number; frames: number };
  in: { bytes: number };
  allocated: boolean;
  started: boolean;
}

const nameOf = (i: number) => `0a:00:00:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;
const ipOf = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${(i & 255) + 1}`;

function makePeer(net: MemNet, i: number, targets: string[], init: IpamInit): Peer {
  const name = nameOf(i);
  const ip = ipOf(i);
  const out = { bytes: 0, frames: 0 };
  const inn = { bytes: 0 };
  const mesh = new Mesh(
    {
      self: { name, nickname: `p${i}`, uid: `u${i}` },
      log,
      transport: net.transport(ip),
      traffic: (dir, kind, bytes) => {
        if (dir === 'out') {
          byKind.set(kind, (byKind.get(kind) ?? 0) + bytes);
          out.bytes += bytes;
          out.frames++;
        } else inn.bytes += bytes;
      },
    },
    { port: 6783, listenAddr: ip, advertise: `${ip}:6783`, heartbeatMs: 5000, refreshMs: REFRESH_MS, retryMinMs: 1000, retryMaxMs: 60_000, handshakeMs: 5000, maxConnections: 200, maxPending: 64, maxPendingPerHost: 16 },
  );
  mesh.setTargets('flags', targets);
  const ipam = new IpamService(
    {
      self: name,
      mesh: {
        channel: (n, g) => mesh.channel(n, g),
        send: (to, ty, b) => mesh.send(to, ty, b),
        onMessage: (ty, h) => mesh.onMessage(ty, h),
        isReachable: (p) => mesh.isReachable(p),
        settled: () => mesh.settled(),
        watch: (fn) => {
          mesh.events.on('reachability', fn);
          mesh.events.on('synced', fn);
        },
      },
      log,
      commit: async () => undefined,
    },
    { range, defaultSubnet: range, init, spaceTimeoutMs: 30_000 },
  );
  return { i, name, ip, mesh, ipam, out, in: inn, allocated: false, started: false };
}

async function startPeer(p: Peer): Promise<void> {
  await p.mesh.start();
  await p.ipam.start();
  p.started = true;
  void p.ipam
    .allocate({ network: 'sim', containerId: `c${p.i}`, ifname: 'eth0' }, range, undefined, { bridge: 'weave' })
    .then(() => (p.allocated = true))
    .catch(() => undefined);
}

/** Advances virtual time in steps, letting I/O and promise chains run between steps. */
async function advance(ms: number, step = 5): Promise<void> {
  for (let t = 0; t < ms; t += step) {
    mock.timers.tick(step);
    await new Promise((r) => realImmediate(r));
    await new Promise((r) => realImmediate(r));
  }
}

/** A router's ring, comparable between routers. */
const ringOf = (p: Peer) => JSON.stringify([...p.ipam.ring.sizes()].sort());

function converged(peers: Peer[]): boolean {
  const n = peers.length;
  const ring0 = ringOf(peers[0]!);
  return peers.every((p) => {
    if (!p.allocated) return false;
    // every peer known and reachable (the routes' reachable set holds known peers only)
    if (p.mesh.topology.size !== n || p.mesh.routes.reachable.size !== n) return false;
    return ringOf(p) === ring0;
  });
}

const stats = (xs: number[]) => ({ mean: xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length), max: Math.max(0, ...xs) });
/** Bytes sent by kind of frame, all routers of the current size. */
const byKind = new Map<string, number>();
const kb = (b: number) => `${(b / 1024).toFixed(1)} KiB`;

async function simulate(n: number, join: string, limitS: number, rate: number): Promise<Record<string, string | number>> {
  const net = new MemNet();
  const peers: Peer[] = [];
  byKind.clear();
  const wall0 = performance.now();
  global.gc?.();
  mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'], now: 1_700_000_000_000 });
  const v0 = Date.now();
  const heap0 = process.memoryUsage().heapUsed;
  try {
    for (let i = 0; i < n; i++) {
      const to = i === 0 ? [] : [`${ipOf(join === 'seed' ? 0 : Math.floor(Math.random() * i))}:6783`];
      peers.push(makePeer(net, i, to, i === 0 ? { mode: 'consensus', size: 1 } : { mode: 'consensus', size: 2 }));
    }
    let said = performance.now();
    /** Progress on stderr, every SIM_PROGRESS_MS of wall time (10 s by default). */
    const progress = () => {
      if (performance.now() - said <= Number(process.env.SIM_PROGRESS_MS ?? 10_000)) return;
      said = performance.now();
      const known = stats(peers.map((p) => p.mesh.routes.reachable.size));
      const counts = peers.map((p) => p.mesh.connections().filter((c) => c.established).length);
      const conns = stats(counts);
      const names = stats(peers.map((p) => p.mesh.topology.size));
      const hubs = counts.map((c, i) => [c, i]).sort((a, b) => b[0]! - a[0]!).slice(0, 3).map(([c, i]) => `#${i} ${c}`).join(', ');
      const ring0 = ringOf(peers[0]!);
      const rings = peers.filter((p) => p.started && ringOf(p) === ring0).length;
      process.stderr.write(`  virtual ${((Date.now() - v0) / 1000).toFixed(2)} s, wall ${((performance.now() - wall0) / 1000).toFixed(0)} s: ${peers.filter((p) => p.started).length} started, known mean ${names.mean.toFixed(0)}, reachable mean ${known.mean.toFixed(0)}, connections mean ${conns.mean.toFixed(1)} (most: ${hubs}), allocated ${peers.filter((p) => p.allocated).length}, ring as #0's ${rings}, heap ${(process.memoryUsage().heapUsed / 2 ** 20).toFixed(0)} MiB\n`);
    };
    // `rate` a second, in index order
    for (const p of peers) {
      await startPeer(p);
      await advance(Math.max(1, Math.floor(1000 / rate)), 1);
      progress();
    }
    let done = converged(peers);
    while (!done && Date.now() - v0 < limitS * 1000) {
      await advance(250);
      done = converged(peers);
      progress();
    }
    const virtS = (Date.now() - v0) / 1000;
    const wallS = Math.round((performance.now() - wall0) / 100) / 10;
    global.gc?.();
    const heapPer = (process.memoryUsage().heapUsed - heap0) / n;
    // SIM_HEAPSNAPSHOT=FILE: what the converged routers hold, for a heap viewer
    if (process.env.SIM_HEAPSNAPSHOT) process.stderr.write(`heap snapshot: ${writeHeapSnapshot(process.env.SIM_HEAPSNAPSHOT)}\n`);
    const sent = stats(peers.map((p) => p.out.bytes));
    const frames = stats(peers.map((p) => p.out.frames));
    const kinds = Object.fromEntries([...byKind].sort((x, y) => y[1] - x[1]).map(([k, b]) => [`sent as ${k} per router`, kb(b / n)]));
    byKind.clear();
    const conns = stats(peers.map((p) => p.mesh.connections().filter((c) => c.established).length));
    // a join into the converged mesh: what did it cost the others?
    let joinRow: Record<string, string | number> = {};
    if (done) {
      // let periodic traffic settle so the measurement window holds the join only, and the
      // formation's tombstones go quiet (QUIET_TOMBSTONE_MS), as in a mesh converged a while ago
      await advance(45_000);
      // the baseline: the same 10 s one refresh period earlier, so it holds the same periodic
      // traffic (each router's digests every REFRESH_MS, heartbeats every 5 s) as the join's window
      const before = peers.map((p) => ({ out: p.out.bytes, in: p.in.bytes }));
      await advance(10_000);
      const baseline = peers.map((p, k) => ({ out: p.out.bytes - before[k]!.out, in: p.in.bytes - before[k]!.in }));
      await advance(REFRESH_MS - 10_000);
      const mid = peers.map((p) => ({ out: p.out.bytes, in: p.in.bytes }));
      const newcomer = makePeer(net, n, [`${ipOf(Math.floor(Math.random() * n))}:6783`], { mode: 'consensus', size: 2 });
      await startPeer(newcomer);
      const all = [...peers, newcomer];
      const j0 = Date.now();
      while (!converged(all) && Date.now() - j0 < 60_000) await advance(250);
      const joinS = (Date.now() - j0) / 1000;
      await advance(Math.max(0, 10_000 - (Date.now() - j0)));
      // cost over a 10 s window, less what the 10 s one refresh period earlier cost without a join
      const cost = peers.map((p, k) => ({ in: p.in.bytes - mid[k]!.in - baseline[k]!.in, out: p.out.bytes - mid[k]!.out - baseline[k]!.out }));
      const rin = stats(cost.map((c) => Math.max(0, c.in)));
      const rout = stats(cost.map((c) => Math.max(0, c.out)));
      joinRow = { 'join (virtual s)': joinS, 'join: received per router mean/max': `${kb(rin.mean)} / ${kb(rin.max)}`, 'join: sent per router mean/max': `${kb(rout.mean)} / ${kb(rout.max)}` };
      peers.push(newcomer);
    }
    return {
      peers: n,
      converged: done ? 'yes' : `no (after ${limitS} s)`,
      'virtual s': virtS,
      'wall s': wallS,
      'connections per router mean/max': `${conns.mean.toFixed(1)} / ${conns.max}`,
      'sent per router mean/max': `${kb(sent.mean)} / ${kb(sent.max)}`,
      'frames per router mean/max': `${frames.mean.toFixed(0)} / ${frames.max}`,
      'heap per router': kb(heapPer),
      ...joinRow,
      ...kinds,
    };
  } finally {
    for (const p of peers) {
      await p.ipam.stop();
      await p.mesh.stop();
    }
    mock.timers.reset();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { peers: { type: 'string', default: '100,300,1000' }, join: { type: 'string', default: 'random' }, limit: { type: 'string', default: '300' }, rate: { type: 'string', default: '100' }, seed: { type: 'string', default: '1' } } });
  const sizes = String(values.peers).split(',').map(Number);
  // the same seed, the same run: who joins through whom and the routers' jitter (everything else runs on the virtual clock)
  if (values.seed !== 'random') Math.random = seededRandom(Number(values.seed));
  const rows: Record<string, string | number>[] = [];
  for (const n of sizes) {
    process.stderr.write(`simulating ${n} routers (${values.join} join, ${values.rate} a second)...\n`);
    const r = await simulate(n, String(values.join), Number(values.limit), Number(values.rate));
    rows.push(r);
    console.log(JSON.stringify(r));
  }
  console.table(rows);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
