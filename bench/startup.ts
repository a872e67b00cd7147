// npm run bench:startup -- [--runs 5]
//
// Time from spawning `node dist/src/main.js` (prebuilt workflow bundle) to its "consuming" log line,
// split by the service's own log lines, the idle RSS once started, and the time to stop on SIGTERM.
// The first run starts on a fresh database and Temporal namespace (creates tables, triggers,
// schedules); the others restart on existing state, as a redeploy does.
import { Redis } from 'ioredis';
import { spawnApp } from './lib/app-process.js';
import {
  createBenchDatabase,
  deleteQueues,
  dropBenchDatabase,
  REDIS_BASE_URL,
  startDevServer,
  waitForServices,
} from './lib/services.js';
import {
  fmt,
  machineDescription,
  median,
  options,
  processRssMiB,
  progress,
  report,
  sleep,
  table,
} from './lib/util.js';

const opts = options({
  runs: 5,
  providers: 1000,
  idleSeconds: 5,
  database: 'balance_sync_bench_startup',
  keydbDb: 15,
});
const NAME = 'bench-startup';
const hardStop = setTimeout(
  () => {
    progress('time limit reached; exiting');
    process.exit(3);
  },
  (opts.runs * 60 + 120) * 1000,
);
hardStop.unref();

await waitForServices();
const server = await startDevServer();
const databaseUrl = await createBenchDatabase(opts.database, opts.providers);
await deleteQueues(`${NAME}.incoming_transactions`, `${NAME}.incoming_transactions.dead`);

const STEPS = ['starting balance-sync', 'schedules ready', 'consuming', 'http endpoints ready'] as const;
interface Run {
  run: string;
  steps: Record<(typeof STEPS)[number], number>;
  idleRss: number;
  stopMs: number;
}
const runs: Run[] = [];
for (let i = 0; i < opts.runs; i++) {
  const app = spawnApp({
    temporalAddress: server.address,
    databaseUrl,
    keydbUrl: `${REDIS_BASE_URL}/${opts.keydbDb}`,
    name: NAME,
  });
  const times = await Promise.all(STEPS.map((step) => app.waitForLog(step)));
  await sleep(opts.idleSeconds * 1000);
  const idleRss = processRssMiB(app.pid) ?? Number.NaN;
  const stopStart = performance.now();
  await app.stop();
  const stopMs = performance.now() - stopStart;
  const steps = Object.fromEntries(STEPS.map((step, k) => [step, times[k]! - app.spawnedAt])) as Run['steps'];
  runs.push({ run: i === 0 ? '1 (fresh database and namespace)' : String(i + 1), steps, idleRss, stopMs });
  progress(
    `run ${i + 1}: consuming after ${steps.consuming} ms, idle RSS ${idleRss.toFixed(0)} MiB, stop ${stopMs.toFixed(0)} ms`,
  );
}

await deleteQueues(`${NAME}.incoming_transactions`, `${NAME}.incoming_transactions.dead`);
await server.stop();
await dropBenchDatabase(opts.database);
// A minute sync may have run while an instance was up.
const keydb = new Redis(`${REDIS_BASE_URL}/${opts.keydbDb}`, { maxRetriesPerRequest: 2 });
keydb.on('error', () => undefined);
await keydb.flushdb().catch(() => undefined);
keydb.disconnect();

const restarts = runs.slice(1);
process.stdout.write(`\n## Start-up and idle memory (${new Date().toISOString()})\n\n`);
process.stdout.write(
  `Machine: ${machineDescription()}. Each run spawns node dist/src/main.js (prebuilt dist/workflow-bundle.js) ` +
    `against an in-memory dev server; times are from spawn to the first log line with that message.\n`,
);
report(
  'Per run (ms from spawn)',
  table(
    [
      'run',
      'process up, config read',
      'schedules ready',
      'consuming',
      'HTTP ready',
      'idle RSS MiB',
      'SIGTERM → exit ms',
    ],
    runs.map((r) => [
      r.run,
      r.steps['starting balance-sync'],
      r.steps['schedules ready'],
      r.steps.consuming,
      r.steps['http endpoints ready'],
      fmt(r.idleRss, 0),
      fmt(r.stopMs, 0),
    ]),
  ),
);
if (restarts.length > 0) {
  report(
    'Summary',
    table(
      ['measure', 'median of restarts', 'max of restarts', 'first start', 'target'],
      [
        [
          'spawn → consuming, ms',
          median(restarts.map((r) => r.steps.consuming)),
          Math.max(...restarts.map((r) => r.steps.consuming)),
          runs[0]!.steps.consuming,
          '≤ 3000',
        ],
        [
          'idle RSS, MiB',
          fmt(median(restarts.map((r) => r.idleRss)), 0),
          fmt(Math.max(...restarts.map((r) => r.idleRss)), 0),
          fmt(runs[0]!.idleRss, 0),
          '≤ 300',
        ],
      ],
    ),
  );
}
process.exit(0);
