import { defineConfig } from 'vitest/config';

/**
 * `npm run test:mutation` (StrykerJS, stryker.config.mjs): the fast, in-process tests that exercise
 * the mutated files (activities on a real Postgres and Redis, schedules on a dev server). Integration tests spawn the built app (not the mutated sources) and take
 * seconds per run, so mutants are judged by unit tests and the activity tests on real Postgres.
 */
export default defineConfig({
  test: {
    include: ['test/unit/**/*.test.ts', 'test/activities/**/*.test.ts', 'test/schedules/**/*.test.ts'],
    // A dev server for the schedule tests (and a database nobody here uses).
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
