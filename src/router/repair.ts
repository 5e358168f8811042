/**
 * Level-triggered repair: compares the host network and the data path with what they should
 * be, and puts back what someone removed (the bridge with its addresses and the pods' veths,
 * weft's rules, the overlays' devices).
 */
import type { Startable } from '../common/lifecycle';
import type { Logger } from '../common/log';

export interface RepairComponents {
  host: { verify(): Promise<string | undefined>; verifyRules(): Promise<string | undefined>; invalidate(): void; setup(): Promise<void> };
  bridge: { restore(): Promise<void> };
  dataPath: { verify(): Promise<string[]>; repair(): Promise<void>; readonly ready: boolean };
  log: Logger;
}

export class Repair implements Startable {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly c: RepairComponents,
    private readonly o: { everyMs: number },
  ) {}

  async start(): Promise<void> {
    this.timer = setInterval(() => void this.run(), this.o.everyMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.running;
  }

  /** One pass; concurrent calls share it. */
  run(): Promise<void> {
    this.running ??= this.pass().finally(() => (this.running = undefined));
    return this.running;
  }

  private async pass(): Promise<void> {
    if (this.stopped) return;
    try {
      const dp = this.c.dataPath.ready ? await this.c.dataPath.verify() : [];
      const broken = [await this.c.host.verify(), await this.c.host.verifyRules(), ...dp].filter(Boolean);
      if (broken.length === 0) return;
      this.c.log.warn({ broken }, 'repairing the host network');
      this.c.host.invalidate();
      await this.c.host.setup();
      await this.c.bridge.restore();
      await this.c.dataPath.repair();
    } catch (e) {
      this.c.log.error({ err: (e as Error).message }, 'repairing the host network failed');
    }
  }
}
