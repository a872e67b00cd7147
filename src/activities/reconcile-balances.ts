import { log } from '@temporalio/activity';
import type pg from 'pg';
import type { AppMetrics } from '../metrics.js';
import { BALANCE_LOCK_KEY, FULL_PROVIDER_SUMS, migrate } from '../postgres/schema.js';

export interface ReconcileBalancesResult {
  providersChecked: number;
  /**
   * Providers whose running sum differed from the full aggregate, with the correction applied: the
   * finite sum's drift, and (when it differed) the drift of the count of NaN/Infinity rows.
   */
  corrections: { providerId: number; drift: string; nonfiniteRowsDrift?: number }[];
  durationMs: number;
}

// One statement, so both sides come from one snapshot; the triggers update the sums in the writer's
// transaction, so the difference is exact even while other transactions insert. Same rules as the
// triggers: finite values are summed, NaN/Infinity rows counted.
const FIND_DRIFT = `
  SELECT coalesce(full_sum.provider_id, s.provider_id) AS provider_id,
         trim_scale(coalesce(full_sum.total, 0) - coalesce(s.tx_sum, 0))::text AS drift,
         (coalesce(full_sum.nonfinite, 0) - coalesce(s.nonfinite_rows, 0))::int AS nonfinite_drift,
         coalesce(full_sum.total, 0) <> coalesce(s.tx_sum, 0)
           OR coalesce(full_sum.nonfinite, 0) <> coalesce(s.nonfinite_rows, 0) AS differs
  FROM (${FULL_PROVIDER_SUMS}) full_sum (provider_id, total, nonfinite)
  FULL JOIN balance_sync_provider_sums s ON s.provider_id = full_sum.provider_id`;

// Additive, so it commutes with increments committed after the snapshot.
const APPLY_CORRECTION = `
  INSERT INTO balance_sync_provider_sums AS s (provider_id, tx_sum, nonfinite_rows)
  SELECT * FROM unnest($1::int[], $2::numeric[], $3::bigint[]) ORDER BY 1
  ON CONFLICT (provider_id) DO UPDATE
  SET tx_sum = s.tx_sum + EXCLUDED.tx_sum, nonfinite_rows = s.nonfinite_rows + EXCLUDED.nonfinite_rows`;

// The correction waits on writers' row locks on the sums while this transaction holds its lock on
// historical_transactions. A writer that then wants that table exclusively in the same transaction
// (TRUNCATE, DROP, ALTER) closes a cycle. Waiting at most a tenth of deadlock_timeout makes this
// reconciliation give up (lock_timeout, 55P03, retried by its workflow) before the writer's deadlock
// check runs, unless the writer had already waited over nine tenths of deadlock_timeout for the read.
const BOUND_CORRECTION_LOCK_WAIT = `
  SELECT set_config('lock_timeout', (SELECT greatest(setting::int / 10, 1)::text FROM pg_settings
                                     WHERE name = 'deadlock_timeout'), true)`;

type DriftRow = { provider_id: number; drift: string; nonfinite_drift: number; differs: boolean };

/**
 * Reads the drift and applies it in one transaction, which holds the advisory lock: two instances
 * never both apply the same correction. The lock is the transaction's, so it ends with it, however
 * the transaction ends, and nothing is left on a connection a pooler (PgBouncer in transaction
 * mode) hands to another client. The read's ACCESS SHARE lock on historical_transactions lasts until
 * the commit, so a TRUNCATE (which zeroes the sums) cannot land between the read and the correction
 * and be undone by it; a TRUNCATE, DROP or ALTER waits for the commit, and so does what queues behind it.
 */
async function correctDrift(client: pg.PoolClient) {
  // READ COMMITTED whatever the database's default: the additive correction then updates the latest
  // version of a sum that a writer changed after the read, where REPEATABLE READ would fail it; each
  // statement's snapshot is then taken after the lock is held.
  await client.query('BEGIN ISOLATION LEVEL READ COMMITTED');
  await client.query('SELECT pg_advisory_xact_lock($1)', [BALANCE_LOCK_KEY]);
  const { rows } = await client.query<DriftRow>(FIND_DRIFT);
  const drifted = rows.filter((row) => row.differs);
  if (drifted.length > 0) {
    await client.query(BOUND_CORRECTION_LOCK_WAIT);
    await client.query(APPLY_CORRECTION, [
      drifted.map((r) => r.provider_id),
      drifted.map((r) => r.drift),
      drifted.map((r) => r.nonfinite_drift),
    ]);
  }
  await client.query('COMMIT');
  const corrections = drifted.map((row) => ({
    providerId: row.provider_id,
    drift: row.drift,
    ...(row.nonfinite_drift !== 0 ? { nonfiniteRowsDrift: row.nonfinite_drift } : {}),
  }));
  return { providersChecked: rows.length, corrections };
}

/**
 * Compares every provider's running sum with the full aggregate over historical_transactions and adds
 * the difference, serialised across instances (correctDrift). On any failure the connection is
 * destroyed rather than returned to the pool, so no transaction is left open on it.
 */
export function createReconcileBalances(pool: pg.Pool, metrics: AppMetrics) {
  return async function reconcileBalances(): Promise<ReconcileBalancesResult> {
    const started = performance.now();
    await migrate(pool); // reinstalls the triggers if the table was recreated
    const client = await pool.connect();
    let failure: Error | undefined;
    try {
      const { providersChecked, corrections } = await correctDrift(client);
      metrics.reconcileDrift.set(corrections.length);
      metrics.reconcileDriftTotal.inc(corrections.length);
      if (corrections.length > 0) log.warn('balance drift corrected', { corrections });
      return { providersChecked, corrections, durationMs: Math.round(performance.now() - started) };
    } catch (error) {
      failure = error as Error;
      throw error;
    } finally {
      client.release(failure);
    }
  };
}
