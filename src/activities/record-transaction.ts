import { ApplicationFailure } from '@temporalio/activity';
import type pg from 'pg';
import type { AppMetrics } from '../metrics.js';

export interface RecordTransactionInput {
  /** The IngestTransaction workflow ID: one message, one key, one row. */
  ingestKey: string;
  providerId: number;
  value: string;
  /** When the bridge received the message (epoch ms), for the end-to-end latency metric. */
  receivedAtMs?: number;
  /** sha256 (hex) of the message body, kept with the ledger entry to detect a reused message_id. */
  bodySha256?: string;
}

export interface RecordTransactionResult {
  transactionId: number;
  /** False when this key had already been recorded (a retry or a redelivery). */
  inserted: boolean;
}

// One statement, so one implicit transaction: the row and its ledger entry commit together.
// A concurrent duplicate fails on the ledger's primary key and rolls back its row.
const INSERT_ONCE = `
  WITH inserted AS (
    INSERT INTO historical_transactions (provider_id, transaction_value)
    SELECT $2, $3::numeric
    WHERE NOT EXISTS (SELECT 1 FROM balance_sync_ingest_ledger WHERE ingest_key = $1)
    RETURNING id
  )
  INSERT INTO balance_sync_ingest_ledger (ingest_key, transaction_id, body_sha256)
  SELECT $1, id, $4 FROM inserted
  RETURNING transaction_id`;

const FIND_RECORDED = `
  SELECT transaction_id, body_sha256 FROM balance_sync_ingest_ledger WHERE ingest_key = $1`;

const UNIQUE_VIOLATION = '23505';
const FOREIGN_KEY_VIOLATION = '23503';

/**
 * Inserts the transaction once per ingest key, however often it is retried or redelivered. A key
 * already recorded with a different body fingerprint fails with MessageIdConflict (not retried).
 */
export function createRecordTransaction(pool: pg.Pool, metrics: AppMetrics) {
  return async function recordTransaction(input: RecordTransactionInput): Promise<RecordTransactionResult> {
    try {
      const { rows } = await pool.query<{ transaction_id: number }>(INSERT_ONCE, [
        input.ingestKey,
        input.providerId,
        input.value,
        input.bodySha256 ?? null,
      ]);
      const inserted = rows[0];
      if (inserted) {
        metrics.transactionsRecorded.inc({ outcome: 'inserted' });
        if (input.receivedAtMs)
          metrics.ingestEndToEndSeconds.observe((Date.now() - input.receivedAtMs) / 1000);
        return { transactionId: inserted.transaction_id, inserted: true };
      }
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code === FOREIGN_KEY_VIOLATION) {
        throw ApplicationFailure.nonRetryable(
          `provider ${input.providerId} does not exist in initial_data`,
          'UnknownProvider',
        );
      }
      if (code?.startsWith('22')) {
        throw ApplicationFailure.nonRetryable(
          `Postgres rejected value ${input.value}: ${(error as Error).message}`,
          'InvalidTransaction',
        );
      }
      if (code !== UNIQUE_VIOLATION) throw error;
    }
    const { rows } = await pool.query<{ transaction_id: number; body_sha256: string | null }>(FIND_RECORDED, [
      input.ingestKey,
    ]);
    const existing = rows[0];
    if (!existing) throw new Error(`ledger entry for ${input.ingestKey} vanished`);
    if (input.bodySha256 && existing.body_sha256 && input.bodySha256 !== existing.body_sha256) {
      throw ApplicationFailure.nonRetryable(
        `${input.ingestKey} was already recorded (transaction ${existing.transaction_id}) from a different body`,
        'MessageIdConflict',
      );
    }
    metrics.transactionsRecorded.inc({ outcome: 'duplicate' });
    return { transactionId: existing.transaction_id, inserted: false };
  };
}
