import { defineConfig } from 'vitest/config';

/** Files that wait on the clock, each on stores of its own: they run beside the integration files. */
const CLOCK_BOUND = [
  'test/integration/sync-minute-boundary.test.ts',
  'test/integration/sync-crash.test.ts',
  'test/integration/sync-lead-pause.test.ts',
  'test/integration/writer-privileges.test.ts',
  'test/integration/sync-watch.test.ts',
  'test/integration/sync-hold.test.ts',
  'test/integration/sync-hold-backlog.test.ts',
  'test/integration/sync-clock-skew.test.ts',
  'test/integration/keydb-fence.test.ts',
];

/**
 * The integration files that share a project's stores run in turn; they are split in two projects, each
 * with its own dev server, database and KeyDB db, so the two halves run side by side. These are the
 * second half: the process as a whole and the files that bring services of their own.
 */
const INTEGRATION_B = [
  'test/integration/process.test.ts',
  'test/integration/key-sequence.test.ts',
  'test/integration/pgbouncer.test.ts',
  'test/integration/temporal-tls.test.ts',
  'test/integration/temporal-api-key.test.ts',
  'test/integration/temporal-mtls-jwt.test.ts',
  'test/integration/lost-start-replies.test.ts',
  'test/integration/rabbitmq-blocked.test.ts',
  'test/integration/dead-letter-kept.test.ts',
  'test/integration/operator-process.test.ts',
];

/** Each project runs this setup: its own Temporal dev server, workflow bundle and database. */
const GLOBAL_SETUP = ['test/support/global-setup.ts'];

/**
 * The integration files use TEST_KEYDB_URL's db (default 9), the independent project the next one and
 * the second integration half the one after, so the projects can run side by side (.ci/run starts
 * each as a process of its own).
 */
const INTEGRATION_KEYDB = new URL(process.env.TEST_KEYDB_URL ?? 'redis://127.0.0.1:6379/9');
function keydbAfter(steps: number): string {
  const url = new URL(INTEGRATION_KEYDB);
  url.pathname = `/${(Number(INTEGRATION_KEYDB.pathname.slice(1) || 0) + steps) % 16}`;
  return url.toString();
}

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default'],
    projects: [
      {
        extends: true,
        test: {
          name: 'integration',
          globalSetup: GLOBAL_SETUP,
          env: { TEST_KEYDB_URL: INTEGRATION_KEYDB.toString() },
          include: ['test/integration/**/*.test.ts'],
          exclude: [...CLOCK_BOUND, ...INTEGRATION_B],
          // These files share one database, one KeyDB db and one dev server: run them in turn.
          fileParallelism: false,
        },
      },
      {
        extends: true,
        test: {
          name: 'integration-b',
          globalSetup: GLOBAL_SETUP,
          env: { TEST_KEYDB_URL: keydbAfter(2) },
          include: INTEGRATION_B,
          fileParallelism: false,
        },
      },
      {
        extends: true,
        test: {
          name: 'independent',
          globalSetup: GLOBAL_SETUP,
          env: { TEST_KEYDB_URL: keydbAfter(1) },
          // Unit, activity (own database and Redis), schedule and replay tests; the fault suite (its
          // own throw-away services and dev server); the clock-bound sync tests (their own Redis, and
          // a database of their own or this project's). Mostly waiting on the clock, so they run
          // beside the integration files rather than after them.
          include: [
            'test/unit/**/*.test.ts',
            'test/activities/**/*.test.ts',
            'test/schedules/**/*.test.ts',
            'test/replay/**/*.test.ts',
            'test/faults/**/*.test.ts',
            ...CLOCK_BOUND,
          ],
          maxWorkers: 2,
        },
      },
    ],
  },
});
