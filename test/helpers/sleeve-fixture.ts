/**
 * N "hosts" for the sleeve, without routers: an underlay bridge in a namespace of its own,
 * a namespace per host (veth on the underlay, bridge `weave`, pods on it), and a
 * sleeve-host.ts process per host namespace driving a SleeveOverlay. The test plays the mesh:
 * it runs the real control handshakes between every pair in-process, hands each host its
 * data keys, and sets each host's routes. Everything is removed in `down`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ControlHandshake, deriveDataKeys, derivePsk } from '../../src/crypto/handshake';
import { Netns, ROOT, sh, uid } from './netns';
import { ROUTER_V8_FLAGS } from '../../src/bin/daemon-flags';

export const UNDERLAY_NET = '172.31.0';
const HARNESS = join(ROOT, 'test/helpers/sleeve-host.ts');

export interface PodSpec {
  /** MTU of the pod's eth0 and its host-side veth. */
  mtu: number;
}

export interface FixtureOptions {
  hosts: number;
  /** Namespace name prefix (a random suffix is added). */
  prefix: string;
  encrypted: boolean;
  trustedSubnets?: string[];
  innerMtu?: number;
  /** The sleeve's carrier (default the overlay's: tcp). */
  carrier?: 'tcp' | 'udp';
  /** Pods per host; pod k of host h has 10.32.k.h/12. Default one pod at MTU 1450. */
  pods?: PodSpec[];
  underlayMtu?: number;
}

export interface FixtureHost {
  index: number;
  /** Peer name (48-bit). */
  name: string;
  /** Underlay address. */
  ip: string;
  ns: Netns;
  pods: Netns[];
  proc: ChildProcess;
  stderr: string;
}

export const peerName = (h: number) => `02:00:00:00:01:${h.toString(16).padStart(2, '0')}`;
export const podIp = (h: number, k = 0) => `10.32.${k}.${h}`;

type Keys = Record<string, { tx: string; rx: string }>;

export class SleeveFixture {
  readonly hosts: FixtureHost[] = [];
  underlay!: Netns;
  private readonly made: Netns[] = [];
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  /** keys[h][peer]: what host h holds for peer (index 1-based). */
  readonly keys: Keys[] = [];

  private constructor(readonly o: FixtureOptions) {}

  static async up(o: FixtureOptions): Promise<SleeveFixture> {
    const f = new SleeveFixture(o);
    try {
      await f.build();
      return f;
    } catch (e) {
      await f.down();
      throw e;
    }
  }

  private ns(role: string): Netns {
    const n = Netns.create(`${this.o.prefix}${role}`);
    this.made.push(n);
    // no IPv6 chatter (router solicitations, MLD) on the pods and bridges: the tests count datagrams
    n.run('sysctl', ['-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
    return n;
  }

  private async build(): Promise<void> {
    const o = this.o;
    const umtu = o.underlayMtu ?? 1500;
    this.underlay = this.ns('u');
    this.underlay.run('ip', ['link', 'add', 'ub', 'mtu', String(umtu), 'type', 'bridge']);
    this.underlay.run('ip', ['link', 'set', 'ub', 'up']);
    const pods = o.pods ?? [{ mtu: 1450 }];
    const bridgeMtu = Math.max(...pods.map((p) => p.mtu));
    for (let h = 1; h <= o.hosts; h++) {
      const ns = this.ns(`h${h}`);
      const peerIf = `u${h}-${uid()}`.slice(0, 15);
      sh('ip', ['link', 'add', peerIf, 'mtu', String(umtu), 'netns', this.underlay.name, 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', String(umtu), 'netns', ns.name]);
      this.underlay.run('ip', ['link', 'set', peerIf, 'master', 'ub', 'up']);
      ns.run('ip', ['addr', 'add', `${UNDERLAY_NET}.${h}/24`, 'dev', 'eth0']);
      ns.run('ip', ['link', 'set', 'eth0', 'up']);
      ns.run('ip', ['link', 'add', 'weave', 'mtu', String(bridgeMtu), 'type', 'bridge']);
      ns.run('ip', ['link', 'set', 'weave', 'up']);
      const hostPods: Netns[] = [];
      pods.forEach((p, k) => {
        const pod = this.ns(`p${h}${k}`);
        const hostIf = `vp${h}${k}`;
        ns.run('ip', ['link', 'add', hostIf, 'mtu', String(p.mtu), 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', String(p.mtu), 'netns', pod.name]);
        ns.run('ip', ['link', 'set', hostIf, 'master', 'weave', 'up']);
        pod.run('ip', ['addr', 'add', `${podIp(h, k)}/12`, 'dev', 'eth0']);
        pod.run('ip', ['link', 'set', 'eth0', 'up']);
        hostPods.push(pod);
      });
      const proc = spawn('nsenter', [`--net=${ns.path}`, '--', process.execPath, ...ROUTER_V8_FLAGS, '--import', 'tsx', HARNESS], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
      const host: FixtureHost = { index: h, name: peerName(h), ip: `${UNDERLAY_NET}.${h}`, ns, pods: hostPods, proc, stderr: '' };
      proc.stderr!.on('data', (d: Buffer) => (host.stderr = (host.stderr + d.toString()).slice(-20_000)));
      createInterface({ input: proc.stdout! }).on('line', (line) => this.answer(line));
      this.hosts.push(host);
    }
    this.makeKeys();
    for (const h of this.hosts) {
      const others = this.hosts.filter((x) => x !== h);
      await this.call(h.index, 'start', {
        options: this.options(h, o.encrypted),
        endpoints: Object.fromEntries(others.map((x) => [x.name, x.ip])),
        routes: Object.fromEntries(others.map((x) => [x.name, x.name])),
        keys: this.keys[h.index],
      });
      await this.call(h.index, 'program', { peers: others.map((x) => ({ name: x.name, ip: x.ip, reachable: true })) });
    }
  }

  private options(h: FixtureHost, encrypted: boolean, carrier = this.o.carrier) {
    const o = this.o;
    // keys replaced by a test take effect at once (the grace is unit-tested)
    return { self: h.name, bridge: 'weave', encrypted, trustedSubnets: o.trustedSubnets, innerMtu: o.innerMtu, keyGraceMs: 0, carrier };
  }

  /** Restarts every host's overlay encrypted or plain (same peers, routes and keys), over `carrier` (default the fixture's). */
  async setEncrypted(encrypted: boolean, carrier?: 'tcp' | 'udp'): Promise<void> {
    for (const h of this.hosts) await this.call(h.index, 'restart', { options: this.options(h, encrypted, carrier ?? this.o.carrier) });
  }

  /** Real handshakes between every pair (the lower index dials), as the mesh would run them. */
  private makeKeys(): void {
    const psk = derivePsk('sleeve fixture secret');
    for (const h of this.hosts) this.keys[h.index] = {};
    for (const a of this.hosts) {
      for (const b of this.hosts) {
        if (b.index <= a.index) continue;
        const [ka, kb] = handshakeKeys(a.name, b.name, psk, psk);
        this.keys[a.index]![b.name] = ka;
        this.keys[b.index]![a.name] = kb;
      }
    }
  }

  /** Keys for host `h` to use with `peer` that do not match the peer's (another secret). */
  wrongKeys(h: number, peer: number): Keys {
    const [, kb] = handshakeKeys(peerName(Math.min(h, peer)), peerName(Math.max(h, peer)), derivePsk('wrong'), derivePsk('wrong'));
    return { ...this.keys[h], [peerName(peer)]: kb };
  }

  private answer(line: string): void {
    let m: { id: number; ok: boolean; result?: unknown; error?: string };
    try {
      m = JSON.parse(line);
    } catch {
      return;
    }
    const p = this.pending.get(m.id);
    if (!p) return;
    this.pending.delete(m.id);
    if (m.ok) p.resolve(m.result);
    else p.reject(new Error(m.error));
  }

  /** Sends one request to host `h` (1-based) and waits for its answer (deadline `ms`). */
  call(h: number, op: string, args: Record<string, unknown> = {}, ms = 30_000): Promise<any> {
    const host = this.hosts[h - 1]!;
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`host ${h}: ${op}: no answer within ${ms} ms; stderr: ${host.stderr.slice(-2000)}`));
      }, ms);
      this.pending.set(id, {
        resolve: (v) => (clearTimeout(t), resolve(v)),
        reject: (e) => (clearTimeout(t), reject(new Error(`host ${h}: ${op}: ${e.message}`))),
      });
      host.proc.stdin!.write(JSON.stringify({ id, op, ...args }) + '\n');
    });
  }

  /** Sets routes on host `h`: peer index -> next hop index (null: unreachable). */
  routes(h: number, r: Record<number, number | null>): Promise<unknown> {
    return this.call(h, 'routes', { routes: Object.fromEntries(Object.entries(r).map(([p, v]) => [peerName(Number(p)), v === null ? null : peerName(v)])) });
  }

  counters(h: number): Promise<any> {
    return this.call(h, 'counters');
  }

  /** Drops all underlay traffic between hosts a and b (nft on the underlay bridge) or lets it pass again. */
  block(a: number, b: number, on: boolean): void {
    const t = `slvblock${a}${b}`;
    if (!on) {
      this.underlay.tryRun('nft', ['delete', 'table', 'bridge', t]);
      return;
    }
    const ia = `${UNDERLAY_NET}.${a}`;
    const ib = `${UNDERLAY_NET}.${b}`;
    this.underlay.run('nft', ['-f', '-'], {
      input: `table bridge ${t} {\n chain blockfwd {\n  type filter hook forward priority 0;\n  ip saddr ${ia} ip daddr ${ib} drop\n  ip saddr ${ib} ip daddr ${ia} drop\n }\n}\n`,
    });
  }

  async down(): Promise<void> {
    await Promise.all(
      this.hosts.map(
        (h) =>
          new Promise<void>((resolve) => {
            if (h.proc.exitCode !== null || h.proc.signalCode !== null) return resolve();
            const t = setTimeout(() => {
              h.proc.kill('SIGKILL');
              resolve();
            }, 10_000);
            h.proc.once('close', () => {
              clearTimeout(t);
              resolve();
            });
            h.proc.stdin!.end();
          }),
      ),
    );
    for (const p of this.pending.values()) p.reject(new Error('fixture going down'));
    this.pending.clear();
    for (const n of this.made.reverse()) n.destroy();
  }
}

/** The data keys two routers derive from a real handshake (a dials b). */
export function handshakeKeys(a: string, b: string, pskA: Buffer, pskB: Buffer): [{ tx: string; rx: string }, { tx: string; rx: string }] {
  const i = new ControlHandshake({ name: a, initiator: true, psk: pskA });
  const r = new ControlHandshake({ name: b, initiator: false, psk: pskB });
  const hi = i.beginHandshake();
  const hr = r.beginHandshake();
  r.onHandshake(hi);
  const rs = r.onHandshake(i.onHandshake(hr).send!);
  const si = i.onHandshake(rs.send!).session!;
  const ki = deriveDataKeys(si, 'sleeve')!;
  const kr = deriveDataKeys(rs.session!, 'sleeve')!;
  const hex = (k: { tx: Buffer; rx: Buffer }) => ({ tx: k.tx.toString('hex'), rx: k.rx.toString('hex') });
  return [hex(ki), hex(kr)];
}
