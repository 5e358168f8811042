/**
 * Mutation testing (`npm run mutate`): StrykerJS changes the code below one small bug at a
 * time and runs the unit tests against each change; a change no test notices is a gap.
 *
 * The tap runner runs each test file as `node --import tsx --test-reporter=tap FILE`, one
 * process per file, and records which files reach which mutant (coverage per file), so a
 * mutant only runs the files that execute it. Only the unit tests run: they need no root and
 * build no network namespace, so two mutants can run side by side.
 */

import { mkdirSync } from 'node:fs';
import { resolve } from 'node:path';

/**
 * THE SCOPE: the files where a bug loses addresses or splits the network. Add a file here to
 * put it under mutation testing.
 */
export const MUTATE = [
  'src/ipam/allocator.ts',
  'src/ipam/ring.ts',
  'src/ipam/consensus.ts',
  'src/ipam/store.ts',
  'src/common/crdt.ts',
  'src/common/fsutil.ts',
  'src/common/ip.ts',
  'src/common/netconf.ts',
  'src/cni/errors.ts',
  'src/cni/version.ts',
  'src/cni/env.ts',
  'src/ipam/service.ts',
  'src/ipam/space.ts',
  'src/datapath/fdb.ts',
];

// the tests' temporary files go to a directory of this run's own: a test file stopped at its
// first failure (forceBail) never reaches its clean-up, and `npm run mutate` removes this after
process.env.TMPDIR = resolve('.stryker-tmp/tests-tmp');
mkdirSync(process.env.TMPDIR, { recursive: true });

// a quarter of each property's cases per mutant (test/helpers/property.ts): fewer cases can
// only let more mutants survive, so the score is not flattered by it
process.env.WEFT_PROPERTY_RUNS_SCALE = '0.25';

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  mutate: MUTATE,
  testRunner: 'tap',
  tap: {
    // the unit tests; the mesh test opens sockets and tests none of the files above
    testFiles: ['test/unit/!(mesh).test.ts'],
    nodeArgs: ['-r', '{{hookFile}}', '--import', 'tsx', '--test-reporter=tap'],
    // a file stops at its first failing test: the mutant is killed, the rest would only cost time
    forceBail: true,
  },
  plugins: ['@stryker-mutator/tap-runner'],
  coverageAnalysis: 'perTest',
  // two cores on this machine, shared: two mutants at a time at most
  concurrency: 2,
  // a mutant that loops forever is a timeout (counted as detected) after this much over its normal time
  timeoutMS: 10_000,
  timeoutFactor: 2,
  // module-level mutants (constants, schemas built at load) cannot be traced to test files and
  // would run every file for each; they are left out of the score and listed as ignored
  ignoreStatic: true,
  reporters: ['clear-text', 'progress-append-only', 'html', 'json'],
  htmlReporter: { fileName: 'reports/mutation/mutation.html' },
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  clearTextReporter: { allowColor: false, logTests: false, maxTestsToLog: 0, reportScoreTable: true, reportMutants: true },
  thresholds: { high: 90, low: 80, break: 80 },
  tempDirName: '.stryker-tmp',
  cleanTempDir: 'always',
};
