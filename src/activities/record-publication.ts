import type pg from 'pg';

/** Serialises history recording across instances (an on-demand run may overlap a minute's). */
const HISTORY_LOCK_KEY = 0x62686973; // "bhis"

// Never moves back: a late attempt of an older minute cannot unrecord a newer one.
const RECORD_MINUTE_PUBLISHED = `
  INSERT INTO balance_sync_sync_state AS s (last_published_boundary) VALUES ($1)
  ON CONFLICT (singleton) DO UPDATE
  SET last_published_boundary = greatest(s.last_published_boundary, EXCLUDED.last_published_boundary)`;

// One statement: the publication at the instant KeyDB applied it (the fence's TIME), the keys whose
// value differs from the latest recorded one (new keys included) and the removed ones, the latest
// values, and the write's unconfirmed note (it is confirmed). A write that KeyDB applied before the
// newest recorded instant (its recording overtaken by a later write's) records nothing and keeps its
// note, so from when it may have applied until a later write it is a gap: the history never answers
// values KeyDB did not hold. A minute is recorded once: a second write of it (KeyDB lost the fence:
// FLUSHDB, a restart without persistence) has no minute. A minute applied by this writer proves that
// no other writer's write of it was applied (the fence lets one writer through per minute), so their
// notes go. Returns whether the history recorded it.
const RECORD_PUBLICATION = `
  WITH last AS (
    SELECT coalesce(max(instant), '-infinity') AS instant FROM balance_sync_publications
  ), publication AS (
    INSERT INTO balance_sync_publications
      (instant, minute, boundary, written_at, write_offset_ms, workflow_id, run_id, attempt, writer)
    SELECT $2::timestamptz,
           CASE WHEN NOT EXISTS (SELECT 1 FROM balance_sync_publications WHERE minute = $1::timestamptz)
                THEN $1::timestamptz END,
           $1, $2, $3, $4, $5, $6, $10::text
    FROM last WHERE $2::timestamptz > last.instant
    RETURNING instant
  ), changed AS (
    SELECT w.key, w.value FROM unnest($7::text[], $8::text[]) AS w (key, value)
    LEFT JOIN balance_sync_balance_current c USING (key)
    WHERE c.value IS DISTINCT FROM w.value OR c.key IS NULL
    UNION ALL
    SELECT r.key, NULL FROM unnest($9::text[]) AS r (key)
    LEFT JOIN balance_sync_balance_current c USING (key)
    WHERE c.value IS NOT NULL OR c.key IS NULL
  ), recorded AS (
    INSERT INTO balance_sync_balance_changes (key, instant, value)
    SELECT changed.key, publication.instant, changed.value FROM changed, publication
    RETURNING key, instant, value
  ), current AS (
    INSERT INTO balance_sync_balance_current AS c (key, value, instant)
    SELECT key, value, instant FROM recorded
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, instant = EXCLUDED.instant
  ), settled AS (
    DELETE FROM balance_sync_unconfirmed_writes u
    WHERE (u.writer = $10 AND EXISTS (SELECT 1 FROM publication))
       OR (u.writer <> $10 AND u.minute = $1::timestamptz)
       OR (u.minute IS NOT NULL AND EXISTS (
             SELECT 1 FROM balance_sync_publications p WHERE p.minute = u.minute AND p.writer <> u.writer))
  )
  SELECT EXISTS (SELECT 1 FROM publication) AS recorded`;

// Every live key's value at the publication just recorded (the newest instant), once the changes since
// the last checkpoint reach the number of live keys (at least one): at the first publication, then
// about every keys ÷ changed-per-minute minutes. An "as of" read then merges one checkpoint with at
// most that many changes, whatever the history's length, and checkpoints take no more room than
// the changes they summarise. The count stops at the threshold, so a long history recorded before
// checkpoints existed costs no more to count.
const RECORD_CHECKPOINT = `
  WITH live AS (
    SELECT greatest(count(*), 1) AS keys FROM balance_sync_balance_current WHERE value IS NOT NULL
  ), since AS (
    SELECT count(*) AS changes FROM (
      SELECT FROM balance_sync_balance_changes
      WHERE instant > (SELECT coalesce(max(instant), '-infinity') FROM balance_sync_balance_checkpoints)
      LIMIT (SELECT keys FROM live)) counted
  )
  INSERT INTO balance_sync_balance_checkpoints (instant, balances)
  SELECT (SELECT max(instant) FROM balance_sync_publications),
         (SELECT coalesce(jsonb_object_agg(key, value), '{}') FROM balance_sync_balance_current
          WHERE value IS NOT NULL)
  FROM since, live
  WHERE since.changes >= live.keys`;

export interface Publication {
  /** The minute this run wrote for; null for an off-minute run (trigger, backfill). */
  boundary: Date | null;
  /** When KeyDB applied it, by KeyDB's TIME (the fence's reply): the history's instant. */
  writtenAt: Date;
  writeOffsetMs: number | null;
  workflowId: string;
  runId: string;
  attempt: number;
  /** The fence's writer (run/activity/attempt), as in its unconfirmed note. */
  writer: string;
  /** Every key written, with its value exactly as written. */
  written: { key: string; balance: string }[];
  /** Keys deleted from KeyDB in the same MULTI. */
  removed: string[];
}

/** A KeyDB write about to be sent, which KeyDB may apply from `mayApplyFrom` to `mayApplyUntil` (its clock). */
export interface UnconfirmedWrite {
  writer: string;
  minute: Date | null;
  mayApplyFrom: Date;
  mayApplyUntil: Date;
}

const NOTE_UNCONFIRMED_WRITE = `
  INSERT INTO balance_sync_unconfirmed_writes (writer, minute, may_apply_from, may_apply_until)
  VALUES ($1, $2, $3, $4)
  ON CONFLICT (writer) DO UPDATE
  SET may_apply_from = least(balance_sync_unconfirmed_writes.may_apply_from, EXCLUDED.may_apply_from),
      may_apply_until = greatest(balance_sync_unconfirmed_writes.may_apply_until, EXCLUDED.may_apply_until)`;

/**
 * Notes a write before it is sent: until it is recorded or forgotten, the history shows a gap over
 * the time it may have been applied (src/history/balance-history.ts).
 */
export async function noteUnconfirmedWrite(pool: pg.Pool, write: UnconfirmedWrite): Promise<void> {
  await pool.query(NOTE_UNCONFIRMED_WRITE, [
    write.writer,
    write.minute,
    write.mayApplyFrom,
    write.mayApplyUntil,
  ]);
}

/** Forgets the note of a write KeyDB refused (never applied): no gap. */
export async function forgetUnconfirmedWrite(pool: pg.Pool, writer: string): Promise<void> {
  await pool.query('DELETE FROM balance_sync_unconfirmed_writes WHERE writer = $1', [writer]);
}

/**
 * Records one applied KeyDB write in a single transaction: the minute for the sync watch (when it is
 * one) and the balance history (with a checkpoint when one is due), confirming its note. Returns
 * false when the history could not take it in order (a later write is recorded): its note stays, a
 * gap. Throws on failure, having recorded nothing.
 */
export async function recordPublication(pool: pg.Pool, publication: Publication): Promise<boolean> {
  const client = await pool.connect();
  let failure: Error | undefined;
  try {
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock($1)', [HISTORY_LOCK_KEY]);
    if (publication.boundary) await client.query(RECORD_MINUTE_PUBLISHED, [publication.boundary]);
    const { rows } = await client.query<{ recorded: boolean }>(RECORD_PUBLICATION, [
      publication.boundary,
      publication.writtenAt,
      publication.writeOffsetMs,
      publication.workflowId,
      publication.runId,
      publication.attempt,
      publication.written.map((row) => row.key),
      publication.written.map((row) => row.balance),
      publication.removed,
      publication.writer,
    ]);
    await client.query(RECORD_CHECKPOINT);
    await client.query('COMMIT');
    return rows[0]?.recorded === true;
  } catch (error) {
    failure = error as Error;
    throw error;
  } finally {
    // A failed client is destroyed (its transaction ends with it), never handed back mid-transaction.
    client.release(failure);
  }
}
