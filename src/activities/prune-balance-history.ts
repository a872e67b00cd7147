import { Context, log } from '@temporalio/activity';
import type pg from 'pg';
import type { AppMetrics } from '../metrics.js';

export interface PruneBalanceHistoryResult {
  /** Publications older than this are gone (null: BALANCE_HISTORY_DAYS is 0, nothing is pruned). */
  cutoff: string | null;
  /** The oldest publication kept: the last one at or before the cutoff, so answers after it stay whole. */
  oldestKept: string | null;
  publicationsDeleted: number;
  changesDeleted: number;
  checkpointsDeleted: number;
  /** Unconfirmed-write notes whose span ended before the oldest kept publication (gaps no answer reaches). */
  notesDeleted: number;
}

/** Rows per DELETE: each is a short transaction holding row locks only, never a table lock. */
const BATCH_ROWS = 5_000;

// The cutoff by the database's clock, never later than the newest publication less the retention: a
// worker clock far ahead, or a service stopped for longer than the retention, prunes nothing that the
// retention keeps (least() skips the NULL of an empty table). Hours, not days, so a session time zone
// with summer time does not move it. `exact` carries the microseconds the statements below compare with.
const CUTOFF = `
  WITH c AS (
    SELECT least(now(), max(instant)) - $1::int * interval '24 hours' AS cutoff
    FROM balance_sync_publications
  )
  SELECT cutoff, cutoff::text AS exact,
    (SELECT max(instant) FROM balance_sync_publications WHERE instant <= c.cutoff) AS keep
  FROM c`;

// $1 is the cutoff; the oldest kept publication is computed in each statement, at full precision.
const KEPT = `(SELECT max(instant) FROM balance_sync_publications WHERE instant <= $1)`;

const DELETE_PUBLICATIONS = `
  DELETE FROM balance_sync_publications WHERE instant IN (
    SELECT instant FROM balance_sync_publications WHERE instant < ${KEPT} ORDER BY instant LIMIT $2)`;

// A change before the oldest kept publication goes only when the same key changed again at or before
// it: each key keeps the value it had then, which every answer after it builds on.
const DELETE_SUPERSEDED_CHANGES = `
  DELETE FROM balance_sync_balance_changes WHERE ctid = ANY (ARRAY (
    SELECT c.ctid FROM balance_sync_balance_changes c
    WHERE c.instant < ${KEPT} AND EXISTS (
      SELECT 1 FROM balance_sync_balance_changes n
      WHERE n.key = c.key AND n.instant > c.instant AND n.instant <= ${KEPT})
    LIMIT $2))`;

// Every checkpoint before the last one at or before the oldest kept publication: answers after that
// publication start from that checkpoint or a later one.
const DELETE_OLD_CHECKPOINTS = `
  DELETE FROM balance_sync_balance_checkpoints WHERE instant IN (
    SELECT instant FROM balance_sync_balance_checkpoints
    WHERE instant < (SELECT max(instant) FROM balance_sync_balance_checkpoints WHERE instant <= ${KEPT})
    ORDER BY instant LIMIT $2)`;

// A note's gap runs from its span's start to the first publication after its span's end: a span that
// ended before the oldest kept publication is a gap before it, where every answer is "no publication".
const DELETE_OLD_NOTES = `
  DELETE FROM balance_sync_unconfirmed_writes WHERE writer IN (
    SELECT writer FROM balance_sync_unconfirmed_writes
    WHERE may_apply_until < ${KEPT} ORDER BY may_apply_until LIMIT $2)`;

async function deleteInBatches(pool: pg.Pool, sql: string, cutoff: string): Promise<number> {
  let deleted = 0;
  for (;;) {
    const { rowCount } = await pool.query(sql, [cutoff, BATCH_ROWS]);
    deleted += rowCount ?? 0;
    Context.current().heartbeat();
    if ((rowCount ?? 0) < BATCH_ROWS) return deleted;
  }
}

/**
 * Deletes balance history older than `days` days (0: keeps it all) before the database's now() or the
 * newest publication, whichever is earlier, in batches of 5,000 rows. It keeps
 * the last publication at or before the cutoff, each key's latest change at or before that, the
 * last checkpoint at or before it and every unconfirmed-write note whose span reaches it, so
 * "as of" answers for any time after the cutoff are unchanged; earlier ones get "no publication".
 */
export function createPruneBalanceHistory(pool: pg.Pool, metrics: AppMetrics, days: number) {
  return async function pruneBalanceHistory(): Promise<PruneBalanceHistoryResult> {
    const none = { publicationsDeleted: 0, changesDeleted: 0, checkpointsDeleted: 0, notesDeleted: 0 };
    if (days === 0) return { cutoff: null, oldestKept: null, ...none };
    const { rows } = await pool.query<{ cutoff: Date; exact: string; keep: Date | null }>(CUTOFF, [days]);
    const { cutoff, exact, keep } = rows[0]!;
    const result = { cutoff: cutoff.toISOString(), oldestKept: keep?.toISOString() ?? null };
    if (!keep) return { ...result, ...none };
    const deleted = {
      changesDeleted: await deleteInBatches(pool, DELETE_SUPERSEDED_CHANGES, exact),
      checkpointsDeleted: await deleteInBatches(pool, DELETE_OLD_CHECKPOINTS, exact),
      notesDeleted: await deleteInBatches(pool, DELETE_OLD_NOTES, exact),
      publicationsDeleted: await deleteInBatches(pool, DELETE_PUBLICATIONS, exact),
    };
    metrics.balanceHistoryPrunedRows.inc(
      deleted.changesDeleted +
        deleted.checkpointsDeleted +
        deleted.notesDeleted +
        deleted.publicationsDeleted,
    );
    if (deleted.publicationsDeleted > 0) log.info('balance history pruned', { ...result, ...deleted });
    return { ...result, ...deleted };
  };
}
