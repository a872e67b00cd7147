import type pg from 'pg';

/** What KeyDB held at an instant: the last recorded publication at or before it. */
export interface BalancesAt {
  /** The minute that publication wrote, or null for an on-demand write (trigger, backfill, late retry). */
  minute: string | null;
  /** When it was written to KeyDB. */
  publishedAt: string;
  /** Every key KeyDB held then (or only the one asked for), values exactly as written. */
  balances: Record<string, string>;
}

export interface KeyChange {
  minute: string | null;
  publishedAt: string;
  /** The value written, or null when the key was removed. */
  value: string | null;
}

/** No publication is recorded at or before the instant asked about (or it is older than the retention). */
export class NoPublicationError extends Error {
  override name = 'NoPublicationError';
}

/**
 * What KeyDB held at the instant is unknown: a write that may have been applied then was never
 * recorded (it wrote and its worker died, it was given up on, or its recording failed).
 */
export class HistoryGapError extends NoPublicationError {
  override name = 'HistoryGapError';
  constructor(
    at: Date,
    /** From when the unrecorded write may have been applied (KeyDB's clock). */
    readonly from: string,
    /** The first publication recorded after it certainly landed or was refused; null: none yet. */
    readonly to: string | null,
  ) {
    super(
      `KeyDB's balances at ${at.toISOString()} are unknown: a write that may have been applied from ${from} ` +
        `was not recorded (a gap in the history, ${to ? `until ${to}` : 'until the next recorded publication'})`,
    );
  }
}

const LAST_PUBLICATION = `
    SELECT instant, minute, written_at FROM balance_sync_publications
    WHERE instant <= $1 ORDER BY instant DESC LIMIT 1`;

// Each unconfirmed write (src/activities/record-publication.ts) as a gap: from when it may have been
// applied to the first publication that certainly came after it, either applied after its deadline
// (the fence refuses it after that) or of a later minute (the fence refuses an older minute after a
// newer one, so it landed before that write, which overwrote it). NULL: none yet.
const UNCONFIRMED_GAPS = `
    SELECT u.may_apply_from AS first, u.minute, least(
      (SELECT min(instant) FROM balance_sync_publications WHERE instant > u.may_apply_until),
      (SELECT instant FROM balance_sync_publications WHERE minute > u.minute ORDER BY minute LIMIT 1)
    ) AS last
    FROM balance_sync_unconfirmed_writes u`;

// Whether $1 is in a gap, given p, the last publication at or before it. One row: gap_from NULL when
// there is none; gap_to where the history answers again (NULL: not yet). A gap over $1 ends after p,
// so only writes whose span overlaps p..$1 can make one: the GiST index reads only those.
const GAP = `
    SELECT min(g.first) AS gap_from,
      CASE WHEN bool_and(g.last IS NOT NULL) THEN max(g.last) END AS gap_to
    FROM (${UNCONFIRMED_GAPS}
          WHERE tstzrange(u.may_apply_from, u.may_apply_until, '[]')
             && tstzrange((SELECT instant FROM p), $1, '[]')) g
    WHERE g.last IS NULL OR g.last > $1`;

// The last publication at or before $1, the last checkpoint at or before it, and the changes after
// that checkpoint up to the publication, oldest first: one checkpoint and at most about one change per
// key (src/activities/record-publication.ts writes a checkpoint when that many have accumulated).
// No row: nothing published yet; checkpoint NULL: none that early (history recorded before
// checkpoints existed), so BALANCES_AT_BY_KEY answers instead. gap_from set: $1 is in a gap.
const BALANCES_AT = `
  WITH p AS (${LAST_PUBLICATION}), g AS (${GAP})
  , c AS (
    SELECT instant, balances FROM balance_sync_balance_checkpoints
    WHERE instant <= (SELECT instant FROM p) ORDER BY instant DESC LIMIT 1
  )
  SELECT p.minute, p.written_at, g.gap_from, g.gap_to, c.balances::text AS checkpoint,
    (SELECT json_agg(json_build_array(ch.key, ch.value) ORDER BY ch.instant)::text
     FROM balance_sync_balance_changes ch
     WHERE ch.instant > c.instant AND ch.instant <= p.instant) AS changes
  FROM p CROSS JOIN g LEFT JOIN c ON true`;

// The same answer without a checkpoint: per key its latest change at or before the publication, one
// index probe per key ever published (balance_current lists them all, removed ones included). With
// $2, only that key (a single probe). No row: nothing published yet; key NULL: no balance then.
const BALANCES_AT_BY_KEY = `
  WITH p AS (${LAST_PUBLICATION}), g AS (${GAP})
  SELECT p.minute, p.written_at, g.gap_from, g.gap_to, b.key, b.value FROM p CROSS JOIN g
  LEFT JOIN LATERAL (
    SELECT k.key, v.value FROM balance_sync_balance_current k
    CROSS JOIN LATERAL (
      SELECT value FROM balance_sync_balance_changes c
      WHERE c.key = k.key AND c.instant <= p.instant ORDER BY c.instant DESC LIMIT 1
    ) v
    WHERE v.value IS NOT NULL AND ($2::text IS NULL OR k.key = $2)
  ) b ON true`;

const CHANGES_BETWEEN = `
  SELECT c.value, p.minute, p.written_at FROM balance_sync_balance_changes c
  JOIN balance_sync_publications p ON p.instant = c.instant
  WHERE c.key = $1 AND c.instant >= $2 AND c.instant <= $3
  ORDER BY c.instant`;

// Gaps and islands: minutes from $1 to $2 (both included) with no recorded minute, as runs.
const UNPUBLISHED_MINUTES = `
  SELECT min(m) AS first, max(m) AS last FROM (
    SELECT m, m - row_number() OVER (ORDER BY m) * interval '1 minute' AS run
    FROM generate_series(date_trunc('minute', $1::timestamptz + interval '59.999999 seconds'),
                         $2::timestamptz, interval '1 minute') AS m
    WHERE NOT EXISTS (SELECT 1 FROM balance_sync_publications p WHERE p.minute = m)
  ) missing
  GROUP BY run ORDER BY first`;

// The gaps of unconfirmed writes that overlap $1..$2, oldest first.
const GAPS_BETWEEN = `
  SELECT * FROM (${UNCONFIRMED_GAPS} WHERE u.may_apply_from <= $2) gaps
  WHERE last IS NULL OR last > $1 ORDER BY first`;

const OLDEST = 'SELECT min(instant) AS instant FROM balance_sync_publications';

type GapColumns = { gap_from: Date | null; gap_to: Date | null };
type BalanceRow = GapColumns & {
  minute: Date | null;
  written_at: Date;
  key: string | null;
  value: string | null;
};
type CheckpointRow = GapColumns & {
  minute: Date | null;
  written_at: Date;
  checkpoint: string | null;
  changes: string | null;
};

/** The publication found, unless `at` is in a gap (HistoryGapError) or before the first one. */
async function publicationOrThrow<Row extends GapColumns>(pool: pg.Pool, at: Date, row: Row | undefined) {
  if (!row) throw new NoPublicationError(await beforeFirstMessage(pool, at));
  if (row.gap_from)
    throw new HistoryGapError(at, row.gap_from.toISOString(), row.gap_to?.toISOString() ?? null);
  return row;
}

/**
 * What KeyDB held at `at`, from the balance history; throws NoPublicationError before the first one,
 * and HistoryGapError (one) where a write that may have been applied was not recorded.
 */
export async function balancesAt(pool: pg.Pool, at: Date, key?: string): Promise<BalancesAt> {
  if (key === undefined) {
    const { rows } = await pool.query<CheckpointRow>(BALANCES_AT, [at]);
    const publication = await publicationOrThrow(pool, at, rows[0]);
    if (publication.checkpoint !== null) {
      const balances = new Map(Object.entries(JSON.parse(publication.checkpoint) as Record<string, string>));
      for (const [changed, value] of JSON.parse(publication.changes ?? '[]') as [string, string | null][]) {
        if (value === null) balances.delete(changed);
        else balances.set(changed, value);
      }
      return answer(publication, [...balances]);
    }
  }
  const { rows } = await pool.query<BalanceRow>(BALANCES_AT_BY_KEY, [at, key ?? null]);
  const publication = await publicationOrThrow(pool, at, rows[0]);
  return answer(
    publication,
    rows.flatMap((row) => (row.key && row.value !== null ? [[row.key, row.value] as [string, string]] : [])),
  );
}

/** The answer, its keys in code-point order whichever query found them. */
function answer(
  publication: { minute: Date | null; written_at: Date },
  balances: [string, string][],
): BalancesAt {
  return {
    minute: publication.minute?.toISOString() ?? null,
    publishedAt: publication.written_at.toISOString(),
    balances: Object.fromEntries(balances.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))),
  };
}

/** Every recorded change of `key` from `from` to `to`, both included, oldest first. */
export async function keyChanges(pool: pg.Pool, key: string, from: Date, to: Date): Promise<KeyChange[]> {
  const { rows } = await pool.query<{ value: string | null; minute: Date | null; written_at: Date }>(
    CHANGES_BETWEEN,
    [key, from, to],
  );
  return rows.map((row) => ({
    minute: row.minute?.toISOString() ?? null,
    publishedAt: row.written_at.toISOString(),
    value: row.value,
  }));
}

/** Runs of minutes from `from` to `to` (both included) that no publication recorded: the gaps. */
export async function unpublishedMinutes(
  pool: pg.Pool,
  from: Date,
  to: Date,
): Promise<{ from: string; to: string }[]> {
  const { rows } = await pool.query<{ first: Date; last: Date }>(UNPUBLISHED_MINUTES, [from, to]);
  return rows.map((row) => ({ from: row.first.toISOString(), to: row.last.toISOString() }));
}

/** An unrecorded write's gap: KeyDB's balances are unknown from `from` until `to` (null: still open). */
export interface HistoryGap {
  from: string;
  to: string | null;
  /** The minute that write was for, or null on demand. */
  minute: string | null;
}

/** The gaps left by writes that may have been applied without being recorded, overlapping `from`..`to`. */
export async function historyGaps(pool: pg.Pool, from: Date, to: Date): Promise<HistoryGap[]> {
  const { rows } = await pool.query<{ first: Date; last: Date | null; minute: Date | null }>(GAPS_BETWEEN, [
    from,
    to,
  ]);
  return rows.map((row) => ({
    from: row.first.toISOString(),
    to: row.last?.toISOString() ?? null,
    minute: row.minute?.toISOString() ?? null,
  }));
}

async function beforeFirstMessage(pool: pg.Pool, at: Date): Promise<string> {
  const { rows } = await pool.query<{ instant: Date | null }>(OLDEST);
  const oldest = rows[0]?.instant;
  return oldest
    ? `no publication recorded at or before ${at.toISOString()}; the oldest kept is ${oldest.toISOString()}`
    : 'no publication recorded yet';
}

/**
 * An instant as an operator writes it: ISO 8601 date and time with a time zone (Z or ±hh:mm, at most
 * 14 hours either side as every real zone is); a time without one would be read in the machine's zone.
 * Each field is range-checked here, so no text reaches Postgres. Returns the reason it is refused, or
 * the Date (to the millisecond).
 */
export function parseInstant(text: string | undefined | null): Date | string {
  if (!text) return 'missing (an ISO 8601 time, e.g. 2026-01-01T14:03:00Z)';
  const shown = `"${text.slice(0, 64)}"`;
  const match = ISO_INSTANT.exec(text);
  if (!match) return `${shown} is not an ISO 8601 time with a time zone (e.g. 2026-01-01T14:03:00Z)`;
  const [year, month, day, hour, minute, second, fraction = '', sign, offsetHours, offsetMinutes] =
    match.slice(1);
  const number = (part: string | undefined) => Number(part ?? 0);
  const date = new Date(0);
  date.setUTCFullYear(number(year), number(month) - 1, number(day));
  const dayOutOfRange = date.getUTCMonth() !== number(month) - 1 || date.getUTCDate() !== number(day);
  if (dayOutOfRange || number(hour) > 23 || number(minute) > 59 || number(second) > 59) {
    return `${shown} is not a valid time`;
  }
  const offset = number(offsetHours) * 60 + number(offsetMinutes);
  if (number(offsetMinutes) > 59 || offset > 14 * 60) {
    return `${shown} has a time zone offset outside -14:00 to +14:00`;
  }
  date.setUTCHours(number(hour), number(minute), number(second), number(fraction.padEnd(3, '0').slice(0, 3)));
  return new Date(date.getTime() - (sign === '-' ? -offset : offset) * 60_000);
}

// 2026-01-01T14:03:00.123+01:00: year, month, day, hour, minute, second, fraction, sign, offset hh, mm
// (no sign: Z).
const ISO_INSTANT =
  /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(?:Z|([+-])(\d{2}):(\d{2}))$/i;
