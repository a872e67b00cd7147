// npm run bench:insert-cost -- [--rows 4000] [--rounds 4] [--concurrency 10]
//
// What recordTransaction's insert (INSERT_ONCE) costs Postgres and the app as the service sends it
// (unnamed: parsed and planned on every call) against the same text as a named prepared statement
// (planned once per connection), in rounds that alternate which goes first, on a bench database with
// the service's tables and balance triggers. Postgres CPU is read from /proc for every process of
// the local cluster (backends, WAL writer, checkpointer, autovacuum), so it needs Postgres on this
// machine and a quiet one; the app's is this process's.
import { readdirSync, readFileSync } from 'node:fs';
import pg from 'pg';
import { INSERT_ONCE } from '../src/activities/record-transaction.js';
import { migrate } from '../src/postgres/schema.js';
import { createBenchDatabase, dropBenchDatabase, waitForServices } from './lib/services.js';
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
  rounds: 4,
  concurrency: 10,
  providers: 1000,
  database: `balance_sync_bench_insert_${process.pid}`,
});
const KINDS = ['unnamed', 'named'] as const;
type Kind = (typeof KINDS)[number];

/** CPU seconds of every local Postgres process (their command names start with "postgres"). */
function postgresCpuSeconds(): number {
  let total = 0;
  let found = 0;
  for (const pid of readdirSync('/proc').filter((entry) => /^\d+$/.test(entry))) {
    try {
      if (!readFileSync(`/proc/${pid}/comm`, 'utf8').startsWith('postgres')) continue;
      total += processCpuSeconds(Number(pid)) ?? 0;
      found++;
    } catch {
      // gone meanwhile
    }
  }
  // Postgres elsewhere (another host, a VM) would read as 0 ms per insert: say so instead.
  if (found === 0) throw new Error('no Postgres process on this machine: its CPU cannot be read from /proc');
  return total;
}

let seq = 0;
async function round(pool: pg.Pool, kind: Kind, rows: number) {
  const [pgBefore, appBefore, started] = [postgresCpuSeconds(), process.cpuUsage(), performance.now()];
  let left = rows;
  await Promise.all(
    Array.from({ length: opts.concurrency }, async () => {
      while (left-- > 0) {
        const n = seq++;
        const values = [`bench-${process.pid}-${n}`, (n % opts.providers) + 1, '1.25', 'ab'.repeat(32)];
        await pool.query(
          kind === 'named'
            ? { name: 'bench_insert_once', text: INSERT_ONCE, values }
            : { text: INSERT_ONCE, values },
        );
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const app = process.cpuUsage(appBefore);
  return {
    rate: rows / seconds,
    pgMs: ((postgresCpuSeconds() - pgBefore) * 1000) / rows,
    appMs: (app.user + app.system) / 1000 / rows,
  };
}

await waitForServices();
const url = await createBenchDatabase(opts.database, opts.providers);
const pool = new pg.Pool({ connectionString: url, max: opts.concurrency, idleTimeoutMillis: 0 });
const results: Record<Kind, Awaited<ReturnType<typeof round>>[]> = { unnamed: [], named: [] };
try {
  await migrate(pool);
  for (const kind of KINDS) await round(pool, kind, 500); // connections, plans, caches
  for (let r = 1; r <= opts.rounds; r++) {
    for (const kind of r % 2 ? KINDS : [...KINDS].reverse()) {
      const result = await round(pool, kind, opts.rows);
      results[kind].push(result);
      progress(
        `round ${r} ${kind}: ${result.rate.toFixed(0)} inserts/s, Postgres ${result.pgMs.toFixed(3)} ms, ` +
          `app ${result.appMs.toFixed(3)} ms per insert`,
      );
    }
  }
} finally {
  await pool.end();
  await dropBenchDatabase(opts.database);
}

report(
  `Insert cost (${new Date().toISOString()})`,
  `Machine: ${machineDescription()}. ${opts.rounds} rounds of ${opts.rows} inserts each way, ` +
    `alternating which goes first, concurrency ${opts.concurrency}; medians.\n\n` +
    table(
      ['statement', 'inserts/s', 'Postgres CPU ms per insert', 'app CPU ms per insert'],
      KINDS.map((kind) => [
        kind === 'named' ? 'named, prepared once per connection' : 'unnamed (the service)',
        median(results[kind].map((r) => r.rate)),
        median(results[kind].map((r) => r.pgMs)).toFixed(3),
        median(results[kind].map((r) => r.appMs)).toFixed(3),
      ]),
    ),
);
process.exit(0);
