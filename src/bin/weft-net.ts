/** The plugin's process: stdin, environment and file descriptors around runPlugin. */
import { readFileSync, writeSync } from 'node:fs';
import { runPlugin } from '../cni/main';

/** Writes straight to the descriptor: no stream to set up for a few hundred bytes. */
function writeFd(fd: number, s: string): void {
  const b = Buffer.from(s);
  let off = 0;
  while (off < b.length) {
    try {
      off += writeSync(fd, b, off);
    } catch (e) {
      // a non-blocking pipe that is full: let a stream wait for it
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      (fd === 1 ? process.stdout : process.stderr).write(b.subarray(off));
      return;
    }
  }
}

export function runPluginProcess(): void {
  void runPlugin({
    env: process.env,
    readStdin: () => readFileSync(0, 'utf8'),
    stdout: (s) => writeFd(1, s),
    stderr: (s) => writeFd(2, s),
  }).then((code) => (process.exitCode = code));
}
