import { readFileSync } from 'node:fs';
import * as v8 from 'node:v8';
import { runPlugin } from '../cni/main';

function main(): void {
  void runPlugin({
    env: process.env,
    readStdin: () => readFileSync(0, 'utf8'),
    stdout: (s) => process.stdout.write(s),
    stderr: (s) => process.stderr.write(s),
  }).then((code) => (process.exitCode = code));
}

// Built into a V8 startup snapshot (build.sh), the modules above are initialised at build
// time and every CNI call starts from the ready heap; run plainly otherwise.
if (v8.startupSnapshot?.isBuildingSnapshot()) v8.startupSnapshot.setDeserializeMainFunction(main);
else main();
