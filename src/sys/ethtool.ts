/** Device offload settings through `ethtool -k` / `ethtool -K` (the only tool that sets them). */
import { run, type RunOptions } from './exec';

/** Whether `feature` (ethtool's long name, e.g. tx-checksumming) is on for `dev`; undefined when ethtool does not list it. */
export async function offload(dev: string, feature: string, opts: RunOptions = {}): Promise<boolean | undefined> {
  const { stdout } = await run('ethtool', ['-k', dev], opts);
  const m = new RegExp(`^${feature}: (on|off)`, 'm').exec(stdout);
  return m ? m[1] === 'on' : undefined;
}

/** Turns an offload on or off (`ethtool -K DEV tx off`, ...) when it is not already so. */
export async function setOffload(dev: string, feature: string, short: string, on: boolean, opts: RunOptions = {}): Promise<void> {
  if ((await offload(dev, feature, opts)) === on) return;
  await run('ethtool', ['-K', dev, short, on ? 'on' : 'off'], opts);
}
