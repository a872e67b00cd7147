import { log } from '@temporalio/activity';
import type pg from 'pg';
import type { AppMetrics } from '../metrics.js';
import { BALANCE_LOCK_KEY, migrate } from '../postgres/schema.js';

export interface ReconcileBalancesResult {
  providersChecked: number;
  /** Providers whose running sum differed from the full aggregate, with the correction applied. */
  corrections: { providerId: number; drift: string }[];
  durationMs: number;
}

// Both sides come from one snapshot, and the triggers update the sums in the writer's transaction,
// so the difference is exact even while other transactions insert.
const FIND_DRIFT = `
  SELECT coalesce(full_sum.provider_id, s.provider_id) AS provider_id,
         trim_scale(coalesce(full_sum.total, 0) - coalesce(s.tx_sum, 0))::text AS drift,
         coalesce(full_sum.total, 0) <> coalesce(s.tx_sum, 0) AS differs
  FROM (
    SELECT provider_id, sum(transaction_value) AS total FROM historical_transactions
    WHERE provider_id IS NOT NULL GROUP BY provider_id
  ) full_sum
  FULL JOIN balance_sync_provider_sums s ON s.provider_id = full_sum.provider_id`;

// Additive, so it commutes with increments committed after the snapshot.
const APPLY_CORRECTION = `
  INSERT INTO balance_sync_provider_sums AS s (provider_id, tx_sum)
  SELECT * FROM unnest($1::int[], $2::numeric[]) ORDER BY 1
  ON CONFLICT (provider_id) DO UPDATE SET tx_sum = s.tx_sum + EXCLUDED.tx_sum`;

/**
 * Compares every provider's running sum with the full SUM over historical_transactions and adds the
 * difference. Serialised across instances by an advisory lock, so two reconciliations never both
 * apply the same correction.
 */
export function createReconcileBalances(pool: pg.Pool, metrics: AppMetrics) {
  return async function reconcileBalances(): Promise<ReconcileBalancesResult> {
    const started = performance.now();
    await migrate(pool); // reinstalls the triggers if the table was recreated
    const client = await pool.connect();
    try {
      await client.query('SELECT pg_advisory_lock($1)', [BALANCE_LOCK_KEY]);
      try {
        await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
        const { rows } = await client.query<{ provider_id: number; drift: string; differs: boolean }>(
          FIND_DRIFT,
        );
        await client.query('COMMIT');
        const drifted = rows.filter((row) => row.differs);
        if (drifted.length > 0) {
          await client.query(APPLY_CORRECTION, [
            drifted.map((r) => r.provider_id),
            drifted.map((r) => r.drift),
          ]);
        }
        const corrections = drifted.map((row) => ({ providerId: row.provider_id, drift: row.drift }));
        metrics.reconcileDrift.set(corrections.length);
        metrics.reconcileDriftTotal.inc(corrections.length);
        if (corrections.length > 0) log.warn('balance drift corrected', { corrections });
        return {
          providersChecked: rows.length,
          corrections,
          durationMs: Math.round(performance.now() - started),
        };
      } finally {
        await client.query('SELECT pg_advisory_unlock($1)', [BALANCE_LOCK_KEY]);
      }
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  };
}
