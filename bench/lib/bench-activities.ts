// Activities for the bench-only workflows: the service's recordTransaction, a batched variant, a no-op.
import type pg from 'pg';
import { createRecordTransaction } from '../../src/activities/record-transaction.js';
import type { AppMetrics } from '../../src/metrics.js';

export interface BatchItem {
  ingestKey: string;
  providerId: number;
  value: string;
}

// The batched form of INSERT_ONCE: ids are drawn first so each ledger entry names its own row.
const INSERT_BATCH_ONCE = `
  WITH fresh AS MATERIALIZED (
    SELECT i.ingest_key, i.provider_id, i.value,
           nextval(pg_get_serial_sequence('historical_transactions', 'id'))::int AS id
    FROM unnest($1::text[], $2::int[], $3::numeric[]) AS i(ingest_key, provider_id, value)
    WHERE NOT EXISTS (SELECT 1 FROM balance_sync_ingest_ledger l WHERE l.ingest_key = i.ingest_key)
  ), rows AS (
    INSERT INTO historical_transactions (id, provider_id, transaction_value)
    SELECT id, provider_id, value FROM fresh
  )
  INSERT INTO balance_sync_ingest_ledger (ingest_key, transaction_id)
  SELECT ingest_key, id FROM fresh`;

export function createBenchActivities(pool: pg.Pool, metrics: AppMetrics) {
  return {
    recordTransaction: createRecordTransaction(pool, metrics),
    /** BenchLocalNoop's local activity: nothing. */
    async noop(): Promise<void> {},
    async recordTransactions(items: BatchItem[]): Promise<number> {
      const result = await pool.query(INSERT_BATCH_ONCE, [
        items.map((item) => item.ingestKey),
        items.map((item) => item.providerId),
        items.map((item) => item.value),
      ]);
      return result.rowCount ?? 0;
    },
  };
}

export type BenchActivities = ReturnType<typeof createBenchActivities>;
