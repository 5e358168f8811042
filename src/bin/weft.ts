import { runCli } from '../cli/main';

void runCli(process.argv.slice(2), { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) }).then(
  (code) => (process.exitCode = code),
  (e: unknown) => {
    process.stderr.write(`weft: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exitCode = 1;
  },
);
