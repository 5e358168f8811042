/** Where weft's two executables are: next to each other, whether run as SEAs or from the repo. */
import { dirname, join, resolve } from 'node:path';

/** True when running as a Node single-executable application. */
export function isSea(): boolean {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return (require('node:sea') as { isSea(): boolean }).isSea();
  } catch {
    return false;
  }
}

/** The weft binary to run routers with: this executable when it is the SEA, else dist/weft of the repo. */
export function defaultWeftBinary(): string {
  if (isSea()) return process.execPath;
  // src/<dir> (tsx) and build/<entry> (ncc bundle) both sit two levels below the repo root
  return resolve(__dirname, '../../dist/weft');
}

export function defaultPlugin(weft: string): string {
  return join(dirname(weft), 'weft-net');
}

