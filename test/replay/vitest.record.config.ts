import { defineConfig } from 'vitest/config';

/** `npm run replay:record`: runs only the history recorder, with the suite's global setup. */
export default defineConfig({
  test: {
    globalSetup: ['test/support/global-setup.ts'],
    include: ['test/replay/record-histories.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
  },
});
