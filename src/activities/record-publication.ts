import type pg from 'pg';

/** Serialises history recording across instances (an on-demand run may overlap a minute's). */
const HISTORY_LOCK_KEY = 0x62686973; // "bhis"

// Never moves back: a late attempt of an older minute cannot unrecord a newer one.
const RECORD_MINUTE_PUBLISHED = `
  INSERT INTO balance_sync_sync_state AS s (last_published_boundary) VALUES ($1)
  ON CONFLICT (singleton) DO UPDATE
  SET last_published_boundary = greatest(s.last_published_boundary, EXCLUDED.last_published_boundary)`;

// One statement: the publication, the keys whose value differs from the latest recorded one (new keys
// included) and the removed ones, and the latest values. A minute is recorded as such only while it is
// later than every recorded instant, which also makes it recorded once (a minute is its own instant);
// any other write (on demand, or a minute's write that lands after a later publication, e.g. a retry
// racing its first attempt) is recorded at when it was written, with no minute: no minute is invented,
// and instants keep the order in which KeyDB was written.
const RECORD_PUBLICATION = `
  WITH last AS (
    SELECT coalesce(max(instant), '-infinity') AS instant FROM balance_sync_publications
  ), publication AS (
    INSERT INTO balance_sync_publications
      (instant, minute, boundary, written_at, write_offset_ms, workflow_id, run_id, attempt)
    SELECT CASE WHEN $1::timestamptz > last.instant THEN $1::timestamptz
                ELSE greatest($2::timestamptz, last.instant + interval '1 microsecond') END,
           CASE WHEN $1::timestamptz > last.instant THEN $1::timestamptz END,
           $1, $2, $3, $4, $5, $6
    FROM last
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
  )
  INSERT INTO balance_sync_balance_current AS c (key, value, instant)
  SELECT key, value, instant FROM recorded
  ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, instant = EXCLUDED.instant`;

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
  writtenAt: Date;
  writeOffsetMs: number | null;
  workflowId: string;
  runId: string;
  attempt: number;
  /** Every key written, with its value exactly as written. */
  written: { key: string; balance: string }[];
  /** Keys deleted from KeyDB in the same MULTI. */
  removed: string[];
}

/**
 * Records one KeyDB write in a single transaction: the minute for the retry fence (when it is one) and
 * the balance history (with a checkpoint when one is due). Throws on failure, having recorded nothing.
 */
export async function recordPublication(pool: pg.Pool, publication: Publication): Promise<void> {
  const client = await pool.connect();
  let failure: Error | undefined;
  try {
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock($1)', [HISTORY_LOCK_KEY]);
    if (publication.boundary) await client.query(RECORD_MINUTE_PUBLISHED, [publication.boundary]);
    await client.query(RECORD_PUBLICATION, [
      publication.boundary,
      publication.writtenAt,
      publication.writeOffsetMs,
      publication.workflowId,
      publication.runId,
      publication.attempt,
      publication.written.map((row) => row.key),
      publication.written.map((row) => row.balance),
      publication.removed,
    ]);
    await client.query(RECORD_CHECKPOINT);
    await client.query('COMMIT');
  } catch (error) {
    failure = error as Error;
    throw error;
  } finally {
    // A failed client is destroyed (its transaction ends with it), never handed back mid-transaction.
    client.release(failure);
  }
}
