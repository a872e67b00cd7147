import { ApplicationFailure, Context, log } from '@temporalio/activity';
import type pg from 'pg';
import { classifyPostgresError, onGeneratedKey, type GeneratedKey } from '../failures.js';
import { IngestOutages } from '../ingest-outages.js';
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
// Sent unnamed, so parsed and planned per call: preparing it saves ~0.1 ms of Postgres CPU per insert
// (npm run bench:insert-cost), under 1% of a message, and would make a prepared plan a new way to fail
// (behind PgBouncer before 1.21; "cached plan must not change result type" after a column change).
export const INSERT_ONCE = `
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

// The sequence filling the only column of the unique index a duplicate violated, if any: a duplicate
// there means the sequence is behind its table (failures.ts, GeneratedKey), not that the row is wrong.
const GENERATED_KEY = `
  SELECT t.oid::regclass::text AS "table", quote_ident(a.attname) AS "column",
         pg_get_serial_sequence(t.oid::regclass::text, a.attname) AS sequence
  FROM pg_class t
  JOIN pg_namespace n ON n.oid = t.relnamespace
  JOIN pg_index x ON x.indrelid = t.oid AND x.indisunique AND x.indnkeyatts = 1
  JOIN pg_class i ON i.oid = x.indexrelid
  JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = x.indkey[0]
  WHERE n.nspname = $1 AND t.relname = $2 AND i.relname = $3
    AND pg_get_serial_sequence(t.oid::regclass::text, a.attname) IS NOT NULL`;

const UNIQUE_VIOLATION = '23505';
const FOREIGN_KEY_VIOLATION = '23503';
/** Attempts for an error that is neither an outage nor a refusal (a bug) before the run gives up. */
export const MAX_UNEXPECTED_INSERT_ATTEMPTS = 5;
/** A run whose insert is still being tried this long after its message arrived logs a warning… */
export const SLOW_INSERT_WARN_MS = 2 * 60_000;
/** …and again this often while it keeps retrying. */
const SLOW_INSERT_REWARN_MS = 5 * 60_000;

/**
 * Inserts the transaction once per ingest key, however often it is retried or redelivered. What a
 * failure means is decided by classifyPostgresError (src/failures.ts): a row Postgres refuses fails at
 * once (UnknownProvider, InvalidTransaction, RefusedByDatabase), as does a key already recorded with a
 * different body fingerprint (MessageIdConflict); an outage is retried for as long as it lasts and
 * shown by IngestOutages; anything else fails for good (InsertFailed) after
 * MAX_UNEXPECTED_INSERT_ATTEMPTS. An insert still tried SLOW_INSERT_WARN_MS after its message arrived
 * logs a warning at each attempt, at most every 5 minutes per run.
 */
export function createRecordTransaction(
  pool: pg.Pool,
  metrics: AppMetrics,
  outages: IngestOutages = new IngestOutages(metrics),
) {
  const slowSince = new Map<string, number>();
  const warnIfSlow = (input: RecordTransactionInput) => {
    const { attempt, scheduledTimestampMs } = Context.current().info;
    const trying = Date.now() - (input.receivedAtMs ?? scheduledTimestampMs);
    const warnedAt = slowSince.get(input.ingestKey) ?? 0;
    if (attempt === 1 || trying < SLOW_INSERT_WARN_MS || Date.now() - warnedAt < SLOW_INSERT_REWARN_MS)
      return;
    if (slowSince.size >= 10_000) slowSince.clear();
    slowSince.set(input.ingestKey, Date.now());
    log.warn('insert still retrying; the run stays open until Postgres takes it', {
      attempt,
      retryingForSeconds: Math.round(trying / 1000),
    });
  };

  const failure = (error: unknown, input: RecordTransactionInput): Error => {
    const { kind, sqlstate, sqlstateClass, reason } = classifyPostgresError(error);
    if (kind === 'refused' && sqlstate === FOREIGN_KEY_VIOLATION)
      return ApplicationFailure.nonRetryable(
        `provider ${input.providerId} does not exist in initial_data`,
        'UnknownProvider',
      );
    if (kind === 'refused' && sqlstateClass === '22')
      return ApplicationFailure.nonRetryable(
        `Postgres rejected value ${input.value}: ${reason}`,
        'InvalidTransaction',
      );
    if (kind === 'refused')
      return ApplicationFailure.nonRetryable(`Postgres refused the row: ${reason}`, 'RefusedByDatabase');
    const { attempt } = Context.current().info;
    if (kind === 'bug' && attempt >= MAX_UNEXPECTED_INSERT_ATTEMPTS)
      return ApplicationFailure.nonRetryable(`insert failed ${attempt} times: ${reason}`, 'InsertFailed');
    metrics.ingestInsertRetries.inc({ sqlstate_class: sqlstateClass });
    if (kind === 'outage' && outages.report('postgres', reason))
      log.warn('Postgres cannot take inserts now; retrying while it lasts', { reason, attempt });
    // The server's message names only the index; the run's last failure should name the sequence to fix.
    if (kind === 'outage' && sqlstate === UNIQUE_VIOLATION) return new Error(reason, { cause: error });
    return error instanceof Error ? error : new Error(reason);
  };

  return async function recordTransaction(input: RecordTransactionInput): Promise<RecordTransactionResult> {
    warnIfSlow(input);
    try {
      const result = await insertOnce(pool, metrics, input);
      outages.clear('postgres');
      slowSince.delete(input.ingestKey);
      return result;
    } catch (error) {
      const thrown = error instanceof ApplicationFailure ? error : failure(error, input);
      if (thrown instanceof ApplicationFailure && thrown.nonRetryable) slowSince.delete(input.ingestKey);
      throw thrown;
    }
  };
}

async function insertOnce(
  pool: pg.Pool,
  metrics: AppMetrics,
  input: RecordTransactionInput,
): Promise<RecordTransactionResult> {
  let uniqueViolation: Error | undefined;
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
      if (input.receivedAtMs) metrics.ingestEndToEndSeconds.observe((Date.now() - input.receivedAtMs) / 1000);
      return { transactionId: inserted.transaction_id, inserted: true };
    }
  } catch (error) {
    if ((error as { code?: string }).code !== UNIQUE_VIOLATION) throw error;
    uniqueViolation = error as Error;
  }
  const { rows } = await pool.query<{ transaction_id: number; body_sha256: string | null }>(FIND_RECORDED, [
    input.ingestKey,
  ]);
  const existing = rows[0];
  // A unique violation without a ledger entry came from another unique key: a refusal, unless that
  // key is one the database generates (a sequence behind its table, which is an outage).
  if (!existing && uniqueViolation) throw await withGeneratedKey(pool, uniqueViolation);
  if (!existing) throw new Error(`ledger entry for ${input.ingestKey} vanished`);
  if (input.bodySha256 && existing.body_sha256 && input.bodySha256 !== existing.body_sha256) {
    throw ApplicationFailure.nonRetryable(
      `${input.ingestKey} was already recorded (transaction ${existing.transaction_id}) from a different body`,
      'MessageIdConflict',
    );
  }
  metrics.transactionsRecorded.inc({ outcome: 'duplicate' });
  return { transactionId: existing.transaction_id, inserted: false };
}

async function withGeneratedKey(pool: pg.Pool, violation: Error): Promise<Error> {
  const { schema, table, constraint } = violation as { schema?: string; table?: string; constraint?: string };
  if (!schema || !table || !constraint) return violation;
  const { rows } = await pool.query<GeneratedKey>(GENERATED_KEY, [schema, table, constraint]);
  const key = rows[0];
  return key ? onGeneratedKey(violation, key) : violation;
}
