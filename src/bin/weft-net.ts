import { readFileSync } from 'node:fs';
import { runPlugin } from '../cni/main';

void runPlugin({
  env: process.env,
  readStdin: () => readFileSync(0, 'utf8'),
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
}).then((code) => (process.exitCode = code));
