/**
 * Mutation testing, outside CI: `npm run test:mutation` (report in reports/mutation/). Runs the tests
 * of test/vitest.mutation.config.ts against each mutant of the files below.
 * @type {import('@stryker-mutator/api/core').PartialStrykerOptions}
 */
export default {
  testRunner: 'vitest',
  vitest: { configFile: 'test/vitest.mutation.config.ts' },
  mutate: [
    'src/bridge/parse-transaction.ts',
    'src/activities/**/*.ts',
    'src/schedules/schedules.ts',
    'src/sync-timing.ts',
  ],
  coverageAnalysis: 'perTest',
  concurrency: 2,
  timeoutMS: 20_000,
  reporters: ['clear-text', 'progress', 'html'],
  htmlReporter: { fileName: 'reports/mutation/index.html' },
  tempDirName: '.stryker-tmp',
  thresholds: { high: 90, low: 80, break: null },
};
