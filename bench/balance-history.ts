// npm run bench:history -- [--providers 1000] [--days 7] [--changing 0.05] [--queries 500] [--records 300] [--noteEvery 60]
//
// The balance history at the size the issue names: 1,000 providers, 7 days of minutes (10,080), 5% of
// the keys changing each minute, generated directly in SQL (one baseline of every key, then the
// changed keys of each minute, and a checkpoint wherever recordPublication would write one: at the
// baseline, then every providers ÷ changed-per-minute minutes), and an unconfirmed-write note (a
// write whose outcome was never known: a gap of about a minute) every `noteEvery` minutes. Reports the history's size on disk, the latency of what
// `npm run balances -- --at` runs (every key, and one key), the same through the CLI process, and
// what recording one more publication costs: recordPublication alone, and the publishBalances
// activity (leadMs null) with 5% of providers changed before each run. The bench database is
// dropped at the end.
import { MockActivityEnvironment } from '@temporalio/testing';
import { execFileSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { Redis } from 'ioredis';
import pg from 'pg';
import { recordPublication } from '../src/activities/record-publication.js';
import { createPublishBalances, type PublishBalancesResult } from '../src/activities/publish-balances.js';
import { balancesAt, HistoryGapError } from '../src/history/balance-history.js';
import { createMetrics } from '../src/metrics.js';
import { migrate } from '../src/postgres/schema.js';
import {
  createBenchDatabase,
  dropBenchDatabase,
  REDIS_BASE_URL,
  REPO_ROOT,
  waitForServices,
} from './lib/services.js';
import {
  fmt,
  machineDescription,
  options,
  progress,
  report,
  summarize,
  table,
  type Summary,
} from './lib/util.js';

const opts = options({
  providers: 1000,
  days: 7,
  changing: 0.05,
  queries: 500,
  records: 300,
  activityRuns: 60,
  cliRuns: 5,
  noteEvery: 60,
  database: 'balance_sync_bench_history',
  keydbDb: 15,
  keep: false,
});
const minutes = opts.days * 1440;
const changedPerMinute = Math.round(opts.providers * opts.changing);

await waitForServices();
const databaseUrl = await createBenchDatabase(opts.database, opts.providers);
const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
pool.on('error', (error) => progress(`idle Postgres client failed: ${error.message}`));
await migrate(pool);

// Keys are `<id>_provider<id>`, as the sync writes them for createBenchDatabase's providers. Minute m
// (m >= 1) changes ids ((m * c + j) * 7919) % providers + 1 for j < c: c distinct ids (7919 is prime).
const START = `date_trunc('minute', now()) - interval '${opts.days} days' - interval '${opts.records + 1} minutes'`;
const GENERATE = `
  INSERT INTO balance_sync_publications (instant, minute, boundary, written_at, write_offset_ms, workflow_id, run_id, attempt)
  SELECT t, t, t, t + interval '12 ms', 12, 'sync-balances-' || t, 'bench', 1
  FROM (SELECT ${START} + m * interval '1 minute' AS t FROM generate_series(0, ${minutes - 1}) m) s;
  INSERT INTO balance_sync_balance_changes (key, instant, value)
  SELECT id || '_provider' || id, ${START}, (id * 1000)::text FROM generate_series(1, ${opts.providers}) id;
  INSERT INTO balance_sync_balance_changes (key, instant, value)
  SELECT id || '_provider' || id, ${START} + m * interval '1 minute', (id * 1000 + m / 100.0)::text
  FROM generate_series(1, ${minutes - 1}) m, generate_series(0, ${changedPerMinute - 1}) j,
       LATERAL (SELECT ((m::bigint * ${changedPerMinute} + j) * 7919) % ${opts.providers} + 1 AS id) k;
  INSERT INTO balance_sync_balance_checkpoints (instant, balances)
  SELECT t, (SELECT jsonb_object_agg(id || '_provider' || id, v.value)
             FROM generate_series(1, ${opts.providers}) id
             CROSS JOIN LATERAL (
               SELECT value FROM balance_sync_balance_changes c
               WHERE c.key = id || '_provider' || id AND c.instant <= t ORDER BY c.instant DESC LIMIT 1) v)
  FROM (SELECT ${START} + m * interval '1 minute' AS t FROM generate_series(0, ${minutes - 1}, ${Math.ceil(opts.providers / changedPerMinute)}) m) s;
  INSERT INTO balance_sync_balance_current (key, value, instant)
  SELECT DISTINCT ON (key) key, value, instant FROM balance_sync_balance_changes ORDER BY key, instant DESC;
  INSERT INTO balance_sync_unconfirmed_writes (writer, minute, may_apply_from, may_apply_until)
  SELECT 'bench-note-' || m, t, t + interval '10 ms', t + interval '1 second'
  FROM (SELECT m, ${START} + m * interval '1 minute' AS t
        FROM generate_series(${opts.noteEvery}, ${minutes - 1}, ${opts.noteEvery}) m) s;
  INSERT INTO balance_sync_sync_state (last_published_boundary)
  SELECT max(instant) FROM balance_sync_publications`;

let t0 = performance.now();
await pool.query(GENERATE);
await pool.query(
  `VACUUM ANALYZE balance_sync_publications, balance_sync_balance_changes, balance_sync_balance_current,
     balance_sync_balance_checkpoints, balance_sync_unconfirmed_writes`,
);
progress(`generated ${minutes} minutes in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

const SIZES = `
  SELECT relname AS name, pg_total_relation_size(oid) AS bytes,
         (SELECT reltuples::bigint FROM pg_class c WHERE c.oid = r.oid) AS rows
  FROM pg_class r WHERE relname IN ('balance_sync_publications', 'balance_sync_balance_changes',
                                    'balance_sync_balance_current', 'balance_sync_balance_checkpoints',
                                    'balance_sync_unconfirmed_writes')
  ORDER BY relname`;
const sizes = (await pool.query<{ name: string; bytes: string; rows: string }>(SIZES)).rows;
const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1);
const totalBytes = sizes.reduce((sum, row) => sum + Number(row.bytes), 0);

// --at: uniformly spread instants over the week (deterministic), every key and one key.
const span = minutes * 60_000;
const { rows: bounds } = await pool.query<{ start: Date }>(`SELECT ${START} AS start`);
const start = bounds[0]!.start.getTime();
const instantOf = (i: number) => new Date(start + ((i * 7_919_017) % span));
let gapAnswers = 0;
async function timeQueries(key?: string) {
  const times: number[] = [];
  for (let i = 0; i < opts.queries + 20; i++) {
    const began = performance.now();
    // An instant inside a note's gap is answered "unknown" (timed like any other answer).
    const answer = await balancesAt(pool, instantOf(i), key).catch((error: unknown) => {
      if (!(error instanceof HistoryGapError)) throw error;
      if (i >= 20) gapAnswers += 1;
      return undefined;
    });
    if (i >= 20) times.push(performance.now() - began);
    if (answer && Object.keys(answer.balances).length !== (key ? 1 : opts.providers))
      throw new Error('wrong answer size');
  }
  return summarize(times);
}
const allKeys = await timeQueries();
const oneKey = await timeQueries('500_provider500');
// The baseline, same data: history recorded before checkpoints existed is answered key by key.
const checkpoints = (await pool.query('SELECT * FROM balance_sync_balance_checkpoints')).rows;
await pool.query('DELETE FROM balance_sync_balance_checkpoints');
const allKeysByKey = await timeQueries();
await pool.query(
  `INSERT INTO balance_sync_balance_checkpoints (instant, balances)
   SELECT instant, balances FROM json_populate_recordset(NULL::balance_sync_balance_checkpoints, $1)`,
  [JSON.stringify(checkpoints)],
);

const cliTimes: number[] = [];
for (let i = 0; i < opts.cliRuns; i++) {
  t0 = performance.now();
  execFileSync(process.execPath, ['dist/src/ops/balances.js', '--at', instantOf(i).toISOString(), '--json'], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? '', DATABASE_URL: databaseUrl },
    maxBuffer: 16 * 2 ** 20,
  });
  cliTimes.push(performance.now() - t0);
}
const cli = summarize(cliTimes);

// Recording one more minute: every key written, 5% of them changed.
const values = new Map(
  (
    await pool.query<{ key: string; value: string }>('SELECT key, value FROM balance_sync_balance_current')
  ).rows.map((row) => [row.key, row.value]),
);
const keys = [...values.keys()];
const recordTimes: number[] = [];
for (let i = 0; i < opts.records; i++) {
  for (let j = 0; j < changedPerMinute; j++) {
    const key = keys[(i * changedPerMinute + j) % keys.length]!;
    values.set(key, `${Number(values.get(key)) + 1}`);
  }
  const boundary = new Date(start + (minutes + i) * 60_000);
  const written = [...values].map(([key, balance]) => ({ key, balance }));
  t0 = performance.now();
  await recordPublication(pool, {
    boundary,
    writtenAt: new Date(boundary.getTime() + 12),
    writeOffsetMs: 12,
    workflowId: 'bench',
    runId: 'bench',
    attempt: 1,
    writer: `bench/${i}`,
    written,
    removed: [],
  });
  recordTimes.push(performance.now() - t0);
}
const recording = summarize(recordTimes);

// The whole activity, as the sync runs it (on demand: no wait for a minute), 5% of providers changed.
const keydb = new Redis(`${REDIS_BASE_URL}/${opts.keydbDb}`);
await keydb.flushdb();
const publishBalances = createPublishBalances(pool, keydb, createMetrics());
const env = new MockActivityEnvironment({ startToCloseTimeoutMs: 0, scheduleToCloseTimeoutMs: 0 });
const activityTimes: number[] = [];
const afterWriteTimes: number[] = [];
for (let i = 0; i < opts.activityRuns; i++) {
  await pool.query(
    `INSERT INTO historical_transactions (provider_id, transaction_value)
     SELECT ((($1::int * ${changedPerMinute} + j) * 7919) % ${opts.providers}) + 1, 1.5
     FROM generate_series(0, ${changedPerMinute - 1}) j`,
    [i],
  );
  t0 = performance.now();
  const result: PublishBalancesResult = await env.run(publishBalances, {
    nominalTime: new Date().toISOString(),
    leadMs: null,
  });
  const total = performance.now() - t0;
  if (i > 0) {
    activityTimes.push(total);
    afterWriteTimes.push(total - result.readMs - result.writeMs);
  }
}
keydb.disconnect();
const activity = summarize(activityTimes);
const afterWrite = summarize(afterWriteTimes);

const { rows: versions } = await pool.query<{ server_version: string }>('SHOW server_version');
const load = loadavg()[0]?.toFixed(1);
const row = (label: string, summary: Summary, digits = 2) => [
  label,
  summary.n,
  ...[summary.p50, summary.p99, summary.max].map((ms) => fmt(ms, digits)),
];
await pool.end();
if (!opts.keep) await dropBenchDatabase(opts.database);

report(
  `Balance history: ${opts.providers} providers, ${opts.days} days (${minutes} minutes), ${changedPerMinute} keys changing per minute`,
  `${machineDescription()}; Node ${process.version}; PostgreSQL ${versions[0]?.server_version}; load average ${load}; ` +
    `an unconfirmed-write note every ${opts.noteEvery} minutes (${gapAnswers} of the timed answers were gaps)\n\n` +
    table(
      ['table', 'rows', 'MiB (pg_total_relation_size)'],
      [
        ...sizes.map((row) => [row.name, Number(row.rows).toLocaleString('en-US'), mib(Number(row.bytes))]),
        ['total', '', mib(totalBytes)],
      ],
    ) +
    '\n\n' +
    table(
      ['measured', 'n', 'p50 ms', 'p99 ms', 'max ms'],
      [
        row('balancesAt, every key (`--at`)', allKeys),
        row('... the same without checkpoints (one probe per key)', allKeysByKey),
        row('balancesAt, one key (`--at --key`)', oneKey),
        row('`npm run balances -- --at … --json` process', cli, 0),
        row('recordPublication (1,000 keys, 50 changed)', recording),
        row('publishBalances activity, whole', activity),
        row('... of which after the KeyDB write', afterWrite),
      ],
    ),
);
process.exit(0);
