import { defineConfig } from 'vitest/config';

/**
 * `npm run test:mutation` (StrykerJS, stryker.config.mjs): the fast, in-process tests that exercise
 * the mutated files. Integration tests spawn the built app (not the mutated sources) and take
 * seconds per run, so mutants are judged by unit tests and the activity tests on real Postgres.
 */
export default defineConfig({
  test: {
    include: ['test/unit/**/*.test.ts', 'test/activities/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
