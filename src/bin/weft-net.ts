import { readFileSync, writeSync } from 'node:fs';
import * as v8 from 'node:v8';
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

function main(): void {
  void runPlugin({
    env: process.env,
    readStdin: () => readFileSync(0, 'utf8'),
    stdout: (s) => writeFd(1, s),
    stderr: (s) => writeFd(2, s),
  }).then((code) => (process.exitCode = code));
}

// Built into a V8 startup snapshot (build.sh), the modules above are initialised at build
// time and every CNI call starts from the ready heap; run plainly otherwise.
if (v8.startupSnapshot?.isBuildingSnapshot()) v8.startupSnapshot.setDeserializeMainFunction(main);
else main();
