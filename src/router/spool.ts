/**
 * Releases the plugin recorded while this router was down (DEL never blocks and never leaks),
 * applied at start and then periodically; and the `<socket>.state` link that tells the plugin
 * where to record them.
 */
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { AllocationRecord, AttachmentKey } from '../common/api';
import type { Startable } from '../common/lifecycle';
import type { Logger } from '../common/log';
import { readSpool, SPOOL_SUBDIR, stateLinkFor } from '../common/spool';

export interface SpoolComponents {
  allocations: { get(key: AttachmentKey): AllocationRecord | undefined; release(key: AttachmentKey): AllocationRecord | undefined };
  commit(): Promise<void>;
  log: Logger;
}

export interface SpoolInit {
  stateDir: string;
  socket: string;
  everyMs: number;
}

export class SpoolDrainer implements Startable {
  private draining: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly c: SpoolComponents,
    private readonly o: SpoolInit,
  ) {}

  async start(): Promise<void> {
    await this.drain();
    this.timer = setInterval(() => void this.drain(), this.o.everyMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.draining;
  }

  /** Points `<socket>.state` at the state dir (atomically), once the API listens. */
  async publishStateDir(): Promise<void> {
    const link = stateLinkFor(this.o.socket);
    const tmp = `${link}.${process.pid}`;
    await fs.rm(tmp, { force: true });
    await fs.symlink(await fs.realpath(this.o.stateDir), tmp);
    await fs.rename(tmp, link);
  }

  /** Applies the recorded releases; concurrent calls share one pass. */
  drain(): Promise<void> {
    this.draining ??= (async () => {
      try {
        const items = await readSpool(join(this.o.stateDir, SPOOL_SUBDIR));
        if (items.length === 0) return;
        const done: string[] = [];
        for (const it of items) {
          if (!it.rec) {
            this.c.log.warn({ path: it.path, err: it.error }, 'unreadable release record removed');
            done.push(it.path);
            continue;
          }
          const cur = this.c.allocations.get(it.rec);
          // a record only releases what existed when it was written, never a newer ADD of the same key
          if (cur && cur.createdAt <= it.rec.recordedAt) {
            this.c.allocations.release(it.rec);
            this.c.log.info({ containerId: it.rec.containerId, ifname: it.rec.ifname, address: cur.address }, 'released from spool');
          }
          done.push(it.path);
        }
        await this.c.commit();
        for (const p of done) await fs.rm(p, { force: true });
      } catch (e) {
        this.c.log.error({ err: (e as Error).message }, 'applying the release spool failed');
      } finally {
        this.draining = undefined;
      }
    })();
    return this.draining;
  }
}
