// npm run bench:insert-cost -- [--rows 4000] [--rounds 3] [--concurrency 10]
//
// What one recordTransaction insert costs Postgres and the app: the service's statement (INSERT_ONCE,
// prepared once per connection under its name) against the same text sent unnamed (parsed and planned
// on every call, as before), alternating in one run, on a bench database with the service's tables and
// balance triggers. CPU is read from /proc: the database's backends, and this process.
import pg from 'pg';
import { INSERT_ONCE, INSERT_ONCE_STATEMENT } from '../src/activities/record-transaction.js';
import { migrate } from '../src/postgres/schema.js';
import { backendPids, createBenchDatabase, dropBenchDatabase, waitForServices } from './lib/services.js';
import {
  machineDescription,
  median,
  options,
  processCpuSeconds,
  progress,
  report,
  table,
} from './lib/util.js';

const opts = options({
  rows: 4000,
  rounds: 3,
  concurrency: 10,
  providers: 1000,
  database: `balance_sync_bench_insert_${process.pid}`,
});

await waitForServices();
const url = await createBenchDatabase(opts.database, opts.providers);
const pool = new pg.Pool({ connectionString: url, max: opts.concurrency, idleTimeoutMillis: 0 });
const monitor = new pg.Pool({ connectionString: url, max: 1 }); // its own backend is left out
await migrate(pool);

let seq = 0;
async function round(named: boolean, rows: number) {
  const pids = await backendPids(monitor, opts.database);
  const pgCpu = () => pids.reduce((sum, pid) => sum + (processCpuSeconds(pid) ?? 0), 0);
  const [pgBefore, appBefore, started] = [pgCpu(), process.cpuUsage(), performance.now()];
  let left = rows;
  await Promise.all(
    Array.from({ length: opts.concurrency }, async () => {
      while (left-- > 0) {
        const n = seq++;
        const values = [`bench-${process.pid}-${n}`, (n % opts.providers) + 1, '1.25', 'ab'.repeat(32)];
        await pool.query(
          named ? { name: INSERT_ONCE_STATEMENT, text: INSERT_ONCE, values } : INSERT_ONCE,
          values,
        );
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const app = process.cpuUsage(appBefore);
  return {
    rate: rows / seconds,
    pgMs: ((pgCpu() - pgBefore) * 1000) / rows,
    appMs: (app.user + app.system) / 1000 / rows,
  };
}

// Warm both paths (connections, plans, caches), then alternate.
await round(true, 500);
await round(false, 500);
const results: Record<'named' | 'unnamed', Awaited<ReturnType<typeof round>>[]> = { named: [], unnamed: [] };
for (let r = 1; r <= opts.rounds; r++) {
  for (const kind of ['unnamed', 'named'] as const) {
    const result = await round(kind === 'named', opts.rows);
    results[kind].push(result);
    progress(
      `round ${r} ${kind}: ${result.rate.toFixed(0)} inserts/s, Postgres ${result.pgMs.toFixed(3)} ms, ` +
        `app ${result.appMs.toFixed(3)} ms per insert`,
    );
  }
}
await pool.end();
await monitor.end();
await dropBenchDatabase(opts.database);

report(
  `Insert cost (${new Date().toISOString()})`,
  `Machine: ${machineDescription()}. ${opts.rounds} alternating rounds of ${opts.rows} inserts, ` +
    `concurrency ${opts.concurrency}; medians.\n\n` +
    table(
      ['statement', 'inserts/s', 'Postgres CPU ms per insert', 'app CPU ms per insert'],
      (['unnamed', 'named'] as const).map((kind) => [
        kind === 'named' ? `named \`${INSERT_ONCE_STATEMENT}\` (the service)` : 'unnamed (before)',
        median(results[kind].map((r) => r.rate)),
        median(results[kind].map((r) => r.pgMs)).toFixed(3),
        median(results[kind].map((r) => r.appMs)).toFixed(3),
      ]),
    ),
);
process.exit(0);
