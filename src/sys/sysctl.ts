/** Kernel parameters of the caller's network namespace, through /proc/sys. */
import { promises as fs } from 'node:fs';

function pathOf(key: string): string {
  return `/proc/sys/${key.replace(/\./g, '/')}`;
}

export async function readSysctl(key: string): Promise<string> {
  return (await fs.readFile(pathOf(key), 'utf8')).trim();
}

/** Sets a parameter when it differs; returns whether it changed. */
export async function ensureSysctl(key: string, value: string): Promise<boolean> {
  if ((await readSysctl(key)) === value) return false;
  await fs.writeFile(pathOf(key), value);
  return true;
}
