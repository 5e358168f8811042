/**
 * Level-triggered repair: compares the host network and the data path with what they should
 * be, and puts back what someone removed (the bridge with its addresses and the pods' veths,
 * weft's rules, the overlays' devices); and, at start, releases the allocations of pods that
 * no longer exist (OrphanReclaim below).
 */
import { hostVethName, type AllocationRecord, type AttachmentKey } from '../common/api';
import type { Startable } from '../common/lifecycle';
import type { Logger } from '../common/log';
import { Pacer } from '../common/pacer';
import { GATEWAY_NETWORK } from '../ipam/allocator';
import type { KernelChange } from '../sys/monitor';

export interface RepairComponents {
  host: { verify(): Promise<string | undefined>; verifyRules(): Promise<string | undefined>; invalidate(): void; setup(): Promise<void> };
  bridge: { restore(): Promise<void> };
  dataPath: { verify(): Promise<string[]>; repair(): Promise<void>; readonly ready: boolean };
  /** Runs the pass's checks with their reads of links and rules shared (src/sys/shared-reads.ts); absent: as they come. */
  sharedReads?<T>(fn: () => Promise<T>): Promise<T>;
  /**
   * The kernel's change reports (src/sys/monitor.ts); absent or not `watching`: a pass every
   * `everyMs`. Reports of forwarding entries (`bridge`) bring no pass: a pass checks none, and
   * while a mesh forms the overlays' own writes report by the dozen.
   */
  watch?: { readonly watching: boolean; onChange(fn: (c: Pick<KernelChange, 'source'>) => void): void };
  log: Logger;
}

/**
 * Passes run every `everyMs` while something changes or the watch is blind, and stretch to
 * `idleMs` while the kernel reports nothing and a pass finds nothing (src/common/pacer.ts).
 */
export class Repair implements Startable {
  private running: Promise<boolean> | undefined;
  private stopped = false;
  private readonly pacer: Pacer;

  constructor(
    private readonly c: RepairComponents,
    private readonly o: { everyMs: number; idleMs?: number },
  ) {
    this.pacer = new Pacer(() => this.run(), { busyMs: o.everyMs, idleMs: o.idleMs ?? o.everyMs });
    c.watch?.onChange((ch) => {
      if (ch.source !== 'bridge') this.pacer.poke();
    });
  }

  async start(): Promise<void> {
    await this.pacer.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.pacer.stop();
    await this.running;
  }

  /** The gap planned after the last pass (longer while all is quiet). */
  get nextGapMs(): number {
    return this.pacer.nextGapMs;
  }

  /** One pass; concurrent calls share it. Resolves true when it had something to repair, or cannot rely on change reports. */
  run(): Promise<boolean> {
    this.running ??= this.pass().finally(() => (this.running = undefined));
    return this.running;
  }

  private async pass(): Promise<boolean> {
    if (this.stopped) return false;
    const blind = !this.c.watch?.watching;
    try {
      const check = async () => {
        const dp = this.c.dataPath.ready ? await this.c.dataPath.verify() : [];
        return [await this.c.host.verify(), await this.c.host.verifyRules(), ...dp].filter(Boolean);
      };
      const broken = this.c.sharedReads ? await this.c.sharedReads(check) : await check();
      this.c.log.debug({ broken: broken.length, watching: !blind }, 'repair pass');
      if (broken.length === 0) return blind;
      this.c.log.warn({ broken }, 'repairing the host network');
      this.c.host.invalidate();
      await this.c.host.setup();
      await this.c.bridge.restore();
      await this.c.dataPath.repair();
    } catch (e) {
      this.c.log.error({ err: (e as Error).message }, 'repairing the host network failed');
    }
    return true;
  }
}

/**
 * What a starting router releases: allocations whose pod is gone. A pod's veth pair lives
 * exactly as long as both its namespaces (the kernel deletes the pair with either), so an
 * allocation whose host end (`hostVethName(key)`) is not in this host's namespace belongs to a
 * pod that no longer exists (the host rebooted, or the pod's namespace went while the router
 * was down and no DEL came), or to an ADD that never finished (its runtime was told it failed
 * and DELs it anyway). The bridge's own addresses (network `_gateway`) are never touched.
 *
 * One exception: a plugin doing the work itself (for an older router, see `src/cni/local.ts`)
 * allocates first and makes the pair after, so an allocation younger than `graceMs` may be one
 * whose pair is a moment away; those are looked at again once the grace has passed, under the
 * attachment's lock (`withName`), and released only if still the same allocation with no pair.
 */
export interface OrphanReclaimComponents {
  allocations: { list(): AllocationRecord[]; get(key: AttachmentKey): AllocationRecord | undefined; release(key: AttachmentKey): AllocationRecord | undefined };
  links: { hostEnds(): Promise<Set<string>>; withName<T>(name: string, fn: () => Promise<T>): Promise<T> };
  commit(): Promise<void>;
  log: Logger;
}

export class OrphanReclaim implements Startable {
  private timer: NodeJS.Timeout | undefined;
  private later: Promise<void> | undefined;

  constructor(
    private readonly c: OrphanReclaimComponents,
    private readonly o: { graceMs: number; now?: () => number },
  ) {}

  /** Releases (durably) the allocations without a pod; schedules a second look at young ones. */
  async start(): Promise<void> {
    const young = await this.pass(false);
    if (young.length === 0) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.later = this.pass(true, young)
        .then(() => undefined)
        .catch((e) => this.c.log.error({ err: (e as Error).message }, 'releasing allocations without a pod failed'));
    }, this.o.graceMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    await this.later;
  }

  /**
   * One look: releases what has no host end and is older than the grace (every candidate when
   * `late`); returns the young ones left for later. `only` limits the look to those records.
   */
  private async pass(late: boolean, only?: AllocationRecord[]): Promise<AllocationRecord[]> {
    const now = (this.o.now ?? Date.now)();
    const candidates = only ?? this.c.allocations.list().filter((a) => a.network !== GATEWAY_NETWORK);
    if (candidates.length === 0) return [];
    const ends = await this.c.links.hostEnds();
    const young: AllocationRecord[] = [];
    let released = 0;
    for (const rec of candidates) {
      const name = hostVethName(rec);
      if (ends.has(name)) continue;
      if (!late && now - Date.parse(rec.createdAt) < this.o.graceMs) {
        young.push(rec);
        continue;
      }
      await this.c.links.withName(name, async () => {
        // still the same allocation (not released, nor made again by a newer ADD), still no pair
        if (this.c.allocations.get(rec) !== rec) return;
        if (late && (await this.c.links.hostEnds()).has(name)) return;
        this.c.allocations.release(rec);
        released++;
        this.c.log.info({ network: rec.network, containerId: rec.containerId, ifname: rec.ifname, address: rec.address, createdAt: rec.createdAt }, 'released at start: its pod is gone');
      });
    }
    if (released) await this.c.commit();
    if (young.length) this.c.log.info({ count: young.length, graceMs: this.o.graceMs }, 'allocations without a pod, too young to release yet: looking again after the grace');
    return young;
  }
}
