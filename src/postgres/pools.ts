import pg from 'pg';

/**
 * Each job gets its own pool, so the minute's read never queues behind an ingest burst (up to
 * WORKER_MAX_LOCAL_ACTIVITIES inserts), and a timeout that suits it: a hung query fails (server-side
 * statement_timeout, then the client's query_timeout if the server does not answer) and its activity
 * retries, instead of holding a connection for good. Getting a connection is bounded too
 * (`connectTimeoutMs`: a free slot, or a server that accepts TCP but never answers the start-up).
 */
const JOBS = {
  /** Inserts, provider look-ups, start-up migration (a 10M-row recount takes about 2 s). */
  ingest: { max: 10, statementTimeoutMs: 30_000, idleTimeoutMs: 10_000, connectTimeoutMs: 10_000 },
  /** The minute's read and write bookkeeping; kept open between minutes and warmed during the lead. */
  sync: { max: 2, statementTimeoutMs: 10_000, idleTimeoutMs: 5 * 60_000, connectTimeoutMs: 5_000 },
  /** The hourly full aggregate (a few seconds at 10M rows) and its correction. */
  reconcile: { max: 2, statementTimeoutMs: 5 * 60_000, idleTimeoutMs: 10_000, connectTimeoutMs: 10_000 },
  /** GET /balances and `npm run balances`: reads of the balance history, each a few index probes. */
  history: { max: 2, statementTimeoutMs: 10_000, idleTimeoutMs: 10_000, connectTimeoutMs: 5_000 },
  /** `npm run produce`: creates and seeds the producer's tables, reads the provider ids. */
  producer: { max: 2, statementTimeoutMs: 30_000, idleTimeoutMs: 10_000, connectTimeoutMs: 10_000 },
} as const;

export type PoolJob = keyof typeof JOBS;

/** The client-side timeout: the server's statement_timeout plus room for it to answer. */
const CLIENT_GRACE_MS = 5_000;

export function createPool(connectionString: string, job: PoolJob, onIdleError: (error: Error) => void) {
  const { max, statementTimeoutMs, idleTimeoutMs, connectTimeoutMs } = JOBS[job];
  const pool = new pg.Pool({
    connectionString,
    max,
    // Sent as a start-up parameter. PgBouncer refuses it ("unsupported startup parameter") unless its
    // ignore_startup_parameters lists it, and then drops it: query_timeout alone bounds a query there.
    statement_timeout: statementTimeoutMs,
    query_timeout: statementTimeoutMs + CLIENT_GRACE_MS,
    idleTimeoutMillis: idleTimeoutMs,
    connectionTimeoutMillis: connectTimeoutMs,
    application_name: `balance-sync ${job}`,
  });
  pool.on('error', onIdleError);
  return pool;
}
