/**
 * Pods' veth pairs, made, checked and removed by the router on the plugin's behalf.
 *
 * Why it is this way: the plugin starts afresh for every CNI call, so every `ip` it ran cost a
 * process start on the critical path of pod creation. The router is warm and privileged and
 * does the same work through `ip -batch` processes started ahead of need (`src/sys/warm.ts`).
 *
 * It also owns the slow half of DEL. Deleting a veth waits for the kernel's RCU grace periods
 * (~20 ms here, most of a CNI DEL), so `detach` only takes the host end down, which puts the
 * pod's address off the wire at once (the pod's end loses its carrier, the bridge port is
 * disabled), and the deletion follows in the background. Whoever needs the name again (an
 * ADD of the same attachment right after its DEL) waits for that deletion first. A host end
 * that no allocation owns (a router killed between DEL's answer and the deletion) is removed
 * by `sweep`, which runs at start.
 */
import { hostVethName, type AttachmentKey } from '../common/api';
import { ExistsError, InterfaceExistsError, LinkNotFoundError } from '../common/errors';
import type { Startable } from '../common/lifecycle';
import type { Logger } from '../common/log';
import type { LinkFacts } from '../common/pod-check';
import type { EnteredBatch, IpRunner } from '../sys/warm';
import type { VethSpec } from '../sys/link';

/** Host ends of weft's veth pairs: `vethwe` and 9 hex digits (see hostVethName). */
export const HOST_VETH_RE = /^vethwe[0-9a-f]{9}$/;

export interface PodLinksComponents {
  /** Runs `ip -batch` (the router passes its warm pool). */
  ip: IpRunner;
  /** Every attachment the router holds now: the sweep keeps their host ends. */
  attachments(): Iterable<AttachmentKey>;
  log: Logger;
}

/** The pair as the plugin's own work makes it (sys/link.ts), and how errors name the namespace. */
export interface PairSpec extends VethSpec {
  /** How errors name the namespace (the runtime's path); `netns` when absent. */
  netnsName?: string;
}

export interface PodAddressing {
  netns: string;
  ifname: string;
  addresses: string[];
  gateway?: string;
}

interface IpLink {
  ifname: string;
  flags?: string[];
  master?: string;
  operstate?: string;
}

interface IpAddr {
  addr_info?: { family: string; local: string; prefixlen: number }[];
}

interface IpRoute {
  dst: string;
  gateway?: string;
  dev?: string;
}

/** Each non-empty line of `ip -json -batch` output is one command's JSON array. */
function jsonLines(stdout: string): unknown[][] {
  return stdout
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as unknown[]);
}

export class PodLinks implements Startable {
  /** Host ends being deleted, with the deletion's completion. */
  private readonly deleting = new Map<string, Promise<void>>();
  private queue: { name: string; done: () => void }[] = [];
  private draining: Promise<void> | undefined;
  /** Per host end, the tail of the operations on it (ADD, DEL, CHECK of one attachment run one at a time). */
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(private readonly c: PodLinksComponents) {}

  async start(): Promise<void> {
    const n = await this.sweep();
    if (n) this.c.log.info({ removed: n }, 'removed host veths no allocation owns');
  }

  /** Waits (at most 5 s) for background deletions to finish. */
  async stop(): Promise<void> {
    const left = [...this.deleting.values()];
    if (left.length) await Promise.race([Promise.all(left), new Promise((r) => setTimeout(r, 5000).unref())]);
  }

  /**
   * Runs `fn` after every earlier operation on this host end has finished, and keeps the
   * sweep away from the name meanwhile (an ADD makes its link before its allocation is final).
   */
  withName<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(name) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.locks.set(name, tail);
    void tail.then(() => {
      if (this.locks.get(name) === tail) this.locks.delete(name);
    });
    return run;
  }

  /** The deletion of `name` in progress, if any. */
  pending(name: string): Promise<void> | undefined {
    return this.deleting.get(name);
  }

  /**
   * Creates the pair with its peer born in the pod's namespace under its final name, so a
   * name taken there fails the creation itself (the CNI 1.0 rule) and leaves nothing; the
   * host end joins the bridge and comes up. A host end of the same name (this attachment's,
   * from an earlier ADD or being deleted) is removed first.
   */
  async createPair(v: PairSpec): Promise<void> {
    await this.pending(v.hostName);
    const lines = [
      `link add ${v.hostName} address ${v.hostMac} mtu ${v.mtu} type veth peer name ${v.ifname} address ${v.mac} mtu ${v.mtu} netns ${v.netns}`,
      `link set ${v.hostName} master ${v.bridge}`,
      `link set ${v.hostName} type bridge_slave hairpin ${v.hairpin ? 'on' : 'off'}`,
      `link set ${v.hostName} up`,
    ];
    for (;;) {
      try {
        await this.c.ip.batch(lines);
        return;
      } catch (e) {
        if (!(e instanceof ExistsError)) {
          await this.remove(v.hostName);
          throw e;
        }
        // which name clashed? our own host end is ours to replace; the pod's name is not
        if (!(await this.remove(v.hostName))) throw new InterfaceExistsError(`interface ${v.ifname} already exists in ${v.netnsName ?? v.netns}`);
      }
    }
  }

  /**
   * Starts entering the pod's namespace for a `configure` to come, while the pair is being
   * made; hand the result to `configure`, or cancel it.
   */
  enter(netns: string): EnteredBatch {
    return this.c.ip.enter({ netns });
  }

  /**
   * Gives the pod's interface its addresses, brings it up, sets the default route; through
   * `entered` (same namespace) when given.
   */
  async configure(c: PodAddressing, entered?: EnteredBatch): Promise<void> {
    const lines = [
      ...c.addresses.map((a) => `addr add ${a} dev ${c.ifname}`),
      `link set ${c.ifname} up`,
      ...(c.gateway ? [`route add default via ${c.gateway} dev ${c.ifname}`] : []),
    ];
    await (entered ? entered.batch(lines) : this.c.ip.batch(lines, { netns: c.netns }));
  }

  /** Deletes a host end now (and with it the pod's end); false when there was none. */
  async remove(name: string): Promise<boolean> {
    await this.pending(name);
    try {
      await this.c.ip.batch([`link del ${name}`]);
      return true;
    } catch (e) {
      if (e instanceof LinkNotFoundError) return false;
      throw e;
    }
  }

  /**
   * Takes the host end down (the pod's address is off the wire when this resolves) and
   * deletes it in the background. False when there was no such link.
   */
  async detach(name: string): Promise<boolean> {
    await this.pending(name);
    try {
      await this.c.ip.batch([`link set ${name} down`]);
    } catch (e) {
      if (e instanceof LinkNotFoundError) return false;
      throw e;
    }
    this.deleteLater(name);
    return true;
  }

  /** Queues a deletion; deletions run one `ip -batch` at a time, as many names as are queued. */
  private deleteLater(name: string): void {
    if (this.deleting.has(name)) return;
    const p = new Promise<void>((done) => this.queue.push({ name, done }));
    this.deleting.set(name, p);
    void p.then(() => this.deleting.delete(name));
    this.draining ??= this.drain();
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length) {
        const batch = this.queue;
        this.queue = [];
        for (const { name, done } of batch) {
          try {
            await this.c.ip.batch([`link del ${name}`], { timeoutMs: 30_000 });
          } catch (e) {
            if (!(e instanceof LinkNotFoundError)) this.c.log.warn({ veth: name, err: (e as Error).message }, 'deleting a detached veth failed; the sweep retries');
          } finally {
            done();
          }
        }
      }
    } finally {
      this.draining = undefined;
    }
  }

  /** Facts CHECK needs from the host side: is the bridge up, what is the host end's master. */
  async inspectHost(bridge: string, hostName: string): Promise<Pick<LinkFacts, 'bridge' | 'host'>> {
    // the bridges first: that line cannot fail, so its output is there even when the veth is missing
    const r = await this.c.ip.batchRaw(['link show type bridge', `link show dev ${hostName}`], { json: true });
    const [bridges = [], host = []] = jsonLines(r.stdout) as [IpLink[]?, IpLink[]?];
    const br = bridges.find((l) => l.ifname === bridge);
    const h = host[0];
    return { bridge: br ? { up: (br.flags ?? []).includes('UP') } : undefined, host: h ? { master: h.master } : undefined };
  }

  /** Facts CHECK needs from inside the pod: its interface, addresses and default routes. */
  async inspectPod(netns: string, ifname: string): Promise<Pick<LinkFacts, 'pod'>> {
    let out: string;
    try {
      // `addr show` carries the link's flags too; a `link show` before it in one batch would
      // turn it into another `link show` (iproute2 6.1 keeps that state between batch lines)
      out = (await this.c.ip.batch([`addr show dev ${ifname}`, 'route show'], { netns, json: true })).stdout;
    } catch (e) {
      if (e instanceof LinkNotFoundError) return { pod: undefined };
      throw e;
    }
    const [links = [], routes = []] = jsonLines(out) as [(IpLink & IpAddr)[]?, IpRoute[]?];
    const l = links[0];
    const addresses = (l?.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`);
    const defaultVia = routes.filter((r) => r.dst === 'default').map((r) => ({ gateway: r.gateway, dev: r.dev }));
    return { pod: { up: (l?.flags ?? []).includes('UP'), addresses, defaultVia } };
  }

  /** The host ends (`vethwe...`) in this namespace now, whatever their state. */
  async hostEnds(): Promise<Set<string>> {
    const r = await this.c.ip.batch(['link show type veth'], { json: true });
    return new Set((jsonLines(r.stdout)[0] as IpLink[] | undefined ?? []).map((l) => l.ifname).filter((n) => HOST_VETH_RE.test(n)));
  }

  /**
   * Deletes host ends (`vethwe...`) that belong to no allocation the router holds, except
   * those an operation holds now (see withName). Returns how many it queued for deletion.
   */
  async sweep(): Promise<number> {
    const names = await this.hostEnds();
    // the allocations are read after the links: a link listed either has its allocation by
    // now or is held by the ADD making it
    const owned = new Set<string>();
    for (const k of this.c.attachments()) owned.add(hostVethName(k));
    let n = 0;
    for (const name of names) {
      if (owned.has(name) || this.locks.has(name) || this.deleting.has(name)) continue;
      this.deleteLater(name);
      n++;
    }
    return n;
  }
}
