// npm run bench:sync-cost -- [--sizes 10000,1000000,10000000] [--runs 7]
//
// What one sync costs as historical_transactions grows: the service's publishBalances activity (reads
// initial_value + the trigger-kept running sums, one MULTI/EXEC to KeyDB), run through
// MockActivityEnvironment with leadMs null, against the full `SUM ... GROUP BY provider_id` + the same
// MSET, in the same process. Rows are loaded with INSERT ... SELECT generate_series with the triggers
// installed (statement-level: one aggregate per statement). The bench database is dropped at the end.
import { MockActivityEnvironment } from '@temporalio/testing';
import { Redis } from 'ioredis';
import { existsSync, statfsSync } from 'node:fs';
import pg from 'pg';
import {
  createPublishBalances,
  type PublishBalancesInput,
  type PublishBalancesResult,
} from '../src/activities/publish-balances.js';
import { createReconcileBalances } from '../src/activities/reconcile-balances.js';
import { createRecordTransaction } from '../src/activities/record-transaction.js';
import { createMetrics } from '../src/metrics.js';
import { migrate } from '../src/postgres/schema.js';
import { createBenchDatabase, dropBenchDatabase, REDIS_BASE_URL, waitForServices } from './lib/services.js';
import { fmt, machineDescription, median, options, progress, report, summarize, table } from './lib/util.js';

const opts = options({
  sizes: '10000,1000000,10000000',
  providers: 1000,
  runs: 7,
  fullRuns: 3,
  inserts: 200,
  chunk: 1_000_000,
  database: 'balance_sync_bench_cost',
  keydbDb: 14,
  budgetMinutes: 45,
  keep: false,
});
const sizes = opts.sizes.split(',').map(Number);

const hardStop = setTimeout(() => {
  progress(`time budget of ${opts.budgetMinutes} min exhausted; exiting`);
  process.exit(3);
}, opts.budgetMinutes * 60_000);
hardStop.unref();

// ~100 bytes per row with its index and trigger transition tables; leave a margin.
const free = statfsSync(existsSync('/var/lib/postgresql') ? '/var/lib/postgresql' : '/');
const freeBytes = free.bavail * free.bsize;
const needed = Math.max(...sizes) * 150;
if (freeBytes < needed * 2) {
  throw new Error(
    `only ${(freeBytes / 2 ** 30).toFixed(1)} GiB free; ${sizes.at(-1)} rows need ~${(needed / 2 ** 30).toFixed(1)} GiB`,
  );
}
progress(`${(freeBytes / 2 ** 30).toFixed(0)} GiB free on the Postgres volume`);

await waitForServices();
const databaseUrl = await createBenchDatabase(opts.database, opts.providers);
const pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
pool.on('error', (error) => progress(`idle Postgres client failed: ${error.message}`));
const keydb = new Redis(`${REDIS_BASE_URL}/${opts.keydbDb}`);
keydb.on('error', (error: Error) => progress(`KeyDB: ${error.message}`));
await keydb.flushdb();
const metrics = createMetrics();
const publishBalances = createPublishBalances(pool, keydb, metrics);
const reconcileBalances = createReconcileBalances(pool, metrics);
const recordTransaction = createRecordTransaction(pool, metrics);
// No timeouts (0 = unset): publishBalances refuses to write once its attempt's timeout has passed.
const env = new MockActivityEnvironment({ startToCloseTimeoutMs: 0, scheduleToCloseTimeoutMs: 0 });
await migrate(pool);

const settings = (
  await pool.query<{ name: string; setting: string }>(
    `SELECT name, current_setting(name) AS setting FROM pg_settings
     WHERE name IN ('shared_buffers', 'work_mem', 'max_parallel_workers_per_gather', 'jit', 'synchronous_commit')`,
  )
).rows
  .map((row) => `${row.name}=${row.setting}`)
  .join(', ');

const FULL_AGGREGATE = `
  SELECT d.id || '_' || d.provider_name AS key,
         trim_scale(d.initial_value + coalesce(t.total, 0))::text AS balance
  FROM initial_data d LEFT JOIN (
    SELECT provider_id, sum(transaction_value) AS total FROM historical_transactions
    WHERE provider_id IS NOT NULL GROUP BY provider_id
  ) t ON t.provider_id = d.id
  ORDER BY d.id`;

const insertRange = (table: string, from: number, to: number) => `
  INSERT INTO ${table} (provider_id, transaction_value)
  SELECT (i % ${opts.providers}) + 1, (((i * 7919) % 200001) - 100000) / 100.0
  FROM generate_series(${from}::bigint, ${to}::bigint) AS i`;

/** The alternative the running sums replace: full aggregate, then the same one MULTI/EXEC. */
async function fullSync(): Promise<{ readMs: number; writeMs: number; totalMs: number; values: string[] }> {
  const t0 = performance.now();
  const { rows } = await pool.query<{ key: string; balance: string }>(FULL_AGGREGATE);
  const t1 = performance.now();
  const replies = await keydb
    .multi()
    .mset(...rows.flatMap((row) => [row.key, row.balance]))
    .exec();
  if (!replies || replies.some(([error]) => error)) throw new Error('MULTI failed');
  const t2 = performance.now();
  return { readMs: t1 - t0, writeMs: t2 - t1, totalMs: t2 - t0, values: rows.map((row) => row.balance) };
}

interface SizeResult {
  rows: number;
  loadSeconds: number;
  loadRowsPerSecond: number;
  vacuumSeconds: number;
  tableBytes: number;
  databaseBytes: number;
  activity: { readMs: number; writeMs: number; totalMs: number };
  full: { readMs: number; writeMs: number; totalMs: number };
  insertMs: { p50: number; p99: number };
  reconcileMs: number;
  recountMs: number;
  matches: boolean;
}

const results: SizeResult[] = [];
let failure: string | undefined;
let loaded = 0;
let plainComparison: { rows: number; withTriggers: number; without: number } | undefined;
let loadSeconds = 0;
let comparisonSeconds = 0; // the no-trigger comparison, not part of the load

try {
  for (const size of sizes) {
    // Load up to `size` rows, in statements of at most `chunk` rows.
    const loadStart = performance.now();
    while (loaded < size) {
      const to = Math.min(size, loaded + opts.chunk);
      const t0 = performance.now();
      await pool.query(insertRange('historical_transactions', loaded + 1, to));
      const seconds = (performance.now() - t0) / 1000;
      progress(
        `loaded rows ${loaded + 1}..${to} in ${seconds.toFixed(1)} s (${Math.round((to - loaded) / seconds)} rows/s)`,
      );
      if (!plainComparison && to - loaded >= 500_000) {
        // The same statement into an identical table without the balance triggers.
        await pool.query(`CREATE TABLE bench_plain (
          id SERIAL PRIMARY KEY, provider_id INTEGER REFERENCES initial_data(id), transaction_value NUMERIC NOT NULL)`);
        const p0 = performance.now();
        await pool.query(insertRange('bench_plain', loaded + 1, to));
        const without = (performance.now() - p0) / 1000;
        await pool.query('DROP TABLE bench_plain');
        plainComparison = { rows: to - loaded, withTriggers: seconds, without };
        comparisonSeconds += (performance.now() - p0) / 1000;
        progress(`same ${to - loaded} rows without triggers: ${without.toFixed(1)} s`);
      }
      loaded = to;
    }
    loadSeconds += (performance.now() - loadStart) / 1000 - comparisonSeconds;
    comparisonSeconds = 0;
    const v0 = performance.now();
    await pool.query('VACUUM (ANALYZE) historical_transactions');
    const vacuumSeconds = (performance.now() - v0) / 1000;
    const space = (
      await pool.query<{ t: string; d: string }>(
        `SELECT pg_total_relation_size('historical_transactions')::text AS t, pg_database_size(current_database())::text AS d`,
      )
    ).rows[0]!;

    // The service's sync activity, off-minute (leadMs null: publish at once).
    const activityRuns: { readMs: number; writeMs: number; totalMs: number }[] = [];
    for (let i = 0; i < opts.runs + 1; i++) {
      const t0 = performance.now();
      const input: PublishBalancesInput = { nominalTime: new Date().toISOString(), leadMs: null };
      const result = await env.run<[PublishBalancesInput], PublishBalancesResult, typeof publishBalances>(
        publishBalances,
        input,
      );
      const totalMs = performance.now() - t0;
      if (i > 0) activityRuns.push({ readMs: result.readMs, writeMs: result.writeMs, totalMs }); // first: warm-up
      progress(
        `  activity run ${i}: read ${result.readMs} ms, write ${result.writeMs} ms, total ${totalMs.toFixed(1)} ms`,
      );
    }
    const activityValues = (await keydb.mget(...(await keydb.keys('*')).sort())).map(String);
    await keydb.flushdb();

    const fullRuns: { readMs: number; writeMs: number; totalMs: number }[] = [];
    let fullValues: string[] = [];
    for (let i = 0; i < opts.fullRuns; i++) {
      const run = await fullSync();
      fullRuns.push(run);
      fullValues = run.values;
      progress(`  full aggregate sync at ${size} rows: ${run.totalMs.toFixed(0)} ms`);
    }
    const fullSorted = (await keydb.mget(...(await keydb.keys('*')).sort())).map(String);
    const matches = fullValues.length === opts.providers && fullSorted.join() === activityValues.join();

    // A single-row ingest INSERT (the trigger runs once per statement) as the table grows.
    const insertTimes: number[] = [];
    for (let i = 0; i < opts.inserts; i++) {
      const t0 = performance.now();
      await recordTransaction({
        ingestKey: `cost-${size}-${i}`,
        providerId: (i % opts.providers) + 1,
        value: '0.01',
      });
      insertTimes.push(performance.now() - t0);
    }
    loaded += opts.inserts;

    const r0 = performance.now();
    await env.run(reconcileBalances);
    const reconcileMs = performance.now() - r0;

    // First start on an existing table: install the triggers and recount every sum (the migration).
    await pool.query('DROP TRIGGER balance_sync_after_insert ON historical_transactions');
    const m0 = performance.now();
    await migrate(pool);
    const recountMs = performance.now() - m0;

    const pick = (runs: { readMs: number; writeMs: number; totalMs: number }[]) => ({
      readMs: median(runs.map((run) => run.readMs)),
      writeMs: median(runs.map((run) => run.writeMs)),
      totalMs: median(runs.map((run) => run.totalMs)),
    });
    const insertSummary = summarize(insertTimes);
    const result: SizeResult = {
      rows: size,
      loadSeconds,
      loadRowsPerSecond: size / loadSeconds,
      vacuumSeconds,
      tableBytes: Number(space.t),
      databaseBytes: Number(space.d),
      activity: pick(activityRuns),
      full: pick(fullRuns),
      insertMs: { p50: insertSummary.p50, p99: insertSummary.p99 },
      reconcileMs,
      recountMs,
      matches,
    };
    results.push(result);
    progress(
      `${size} rows: activity ${result.activity.totalMs.toFixed(1)} ms, full ${result.full.totalMs.toFixed(0)} ms, ` +
        `insert p50 ${insertSummary.p50.toFixed(2)} ms, reconcile ${reconcileMs.toFixed(0)} ms, recount ${recountMs.toFixed(0)} ms, same balances: ${matches}`,
    );
    await keydb.flushdb();
  }
} catch (error) {
  failure = (error as Error).message;
  progress(`stopped early: ${failure}`);
} finally {
  await keydb.flushdb().catch(() => undefined);
  keydb.disconnect();
  await pool.end();
  if (!opts.keep) await dropBenchDatabase(opts.database);
}

const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(0);
process.stdout.write(`\n## Sync cost vs history size (${new Date().toISOString()})\n\n`);
process.stdout.write(
  `Machine: ${machineDescription()}. ${opts.providers} providers; medians of ${opts.runs} activity runs ` +
    `(after one warm-up) and ${opts.fullRuns} full-aggregate runs; warm caches. Postgres: ${settings}.\n` +
    (failure ? `\n**Stopped early**: ${failure}\n` : ''),
);
report(
  'One sync: running sums (the service) vs full aggregate, ms',
  table(
    [
      'rows',
      'activity read',
      'activity write',
      'activity total',
      'target',
      'full SUM read',
      'full write',
      'full total',
      'full ÷ activity',
      'same balances',
    ],
    results.map((r) => [
      r.rows.toLocaleString('en-US'),
      r.activity.readMs,
      r.activity.writeMs,
      r.activity.totalMs,
      r.rows >= 10_000_000 ? '≤ 50' : '',
      r.full.readMs,
      r.full.writeMs,
      r.full.totalMs,
      (r.full.totalMs / r.activity.totalMs).toFixed(1),
      r.matches ? 'yes' : 'NO',
    ]),
  ),
);
report(
  'Loading, disk, and the other costs that grow with the table',
  table(
    [
      'rows',
      'cumulative load s',
      'load rows/s',
      'VACUUM ANALYZE s',
      'table + indexes MiB',
      'database MiB',
      'ingest INSERT p50 ms',
      'p99 ms',
      'reconcile (full SUM) ms',
      'trigger install + recount ms',
    ],
    results.map((r) => [
      r.rows.toLocaleString('en-US'),
      r.loadSeconds,
      Math.round(r.loadRowsPerSecond),
      r.vacuumSeconds,
      mib(r.tableBytes),
      mib(r.databaseBytes),
      fmt(r.insertMs.p50, 2),
      fmt(r.insertMs.p99, 2),
      Math.round(r.reconcileMs),
      Math.round(r.recountMs),
    ]),
  ) +
    (plainComparison
      ? `\n\nStatement-level trigger overhead on bulk load: ${plainComparison.rows.toLocaleString('en-US')} rows in one ` +
        `INSERT ... SELECT took ${plainComparison.withTriggers.toFixed(1)} s with the triggers and ` +
        `${plainComparison.without.toFixed(1)} s into an identical table without them ` +
        `(${((plainComparison.withTriggers / plainComparison.without - 1) * 100).toFixed(0)}% more).`
      : ''),
);
process.exit(0);
