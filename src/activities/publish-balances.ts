import { ApplicationFailure, Context, log } from '@temporalio/activity';
import type { Redis } from 'ioredis';
import type pg from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';
import { KEYDB_COMMAND_TIMEOUT_MS } from '../keydb/client.js';
import type { AppMetrics } from '../metrics.js';
import { COUNT_BALANCE_TRIGGERS_SQL, EXPECTED_TRIGGER_COUNT, migrate } from '../postgres/schema.js';
import { ATTEMPT_STOPPED_ERROR, SYNC_HEARTBEAT_INTERVAL_MS, boundaryFor } from '../sync-timing.js';
import { recordPublication, type Publication } from './record-publication.js';

export interface PublishBalancesInput {
  /** The schedule's nominal time for this run (TemporalScheduledStartTime), ISO 8601. */
  nominalTime: string;
  /** How far before the minute the schedule fires (the activity holds until the minute); null to publish now. */
  leadMs: number | null;
}

/** A provider whose balance is not published this run; KeyDB keeps its last good value. */
export interface UnpublishableProvider {
  providerId: number;
  /** Its KeyDB key, or null when provider_name is NULL. */
  key: string | null;
  reason: string;
}

export interface PublishBalancesResult {
  /** The minute boundary this run wrote for, or null for an off-minute run (trigger, backfill). */
  boundary: string | null;
  /** When KeyDB was written; null when this attempt wrote nothing (alreadyPublished). */
  writtenAt: string | null;
  /** KeyDB write time minus the boundary, in ms; null for an off-minute run or when nothing was written. */
  writeOffsetMs: number | null;
  /** A retried attempt found its minute already published (by an earlier attempt) and wrote nothing. */
  alreadyPublished: boolean;
  /**
   * Whether the minute is now recorded as published (balance_sync_sync_state), so that a retry will not
   * write it again; false for an off-minute run, or when recording failed after the write (logged).
   */
  boundaryRecorded: boolean;
  /** Whether this write is in the balance history (recorded in the same transaction as the minute). */
  historyRecorded: boolean;
  /** Providers written. */
  providers: number;
  unpublishable: UnpublishableProvider[];
  keysRemoved: string[];
  readMs: number;
  writeMs: number;
  triggersReinstalled: boolean;
}

const SLOW_WRITE_WARN_MS = 500;
/**
 * An attempt starts its write at least this long before its own timeout: the write then succeeds or
 * fails (KEYDB_COMMAND_TIMEOUT_MS) while the attempt is still its run's only one, so a timed-out
 * attempt never writes. A server that resumes after the client gave up may still apply it: in order
 * on this connection, before any later write, so it never overwrites a newer minute from this worker.
 */
const WRITE_MARGIN_MS = KEYDB_COMMAND_TIMEOUT_MS + 500;

// A provider is published only when its balance is a finite number: a NaN or ±Infinity anywhere in its
// history (counted by the triggers in nonfinite_rows) or in initial_value, or a NULL, holds it back.
const READ_BALANCES = `
  ${COUNT_BALANCE_TRIGGERS_SQL};
  SELECT provider_id, key, CASE WHEN reason IS NULL THEN balance END AS balance, reason FROM (
    SELECT d.id AS provider_id, d.id || '_' || d.provider_name AS key,
           trim_scale(d.initial_value + coalesce(s.tx_sum, 0))::text AS balance,
           CASE WHEN d.provider_name IS NULL THEN 'provider_name is NULL'
                WHEN d.initial_value IS NULL THEN 'initial_value is NULL'
                WHEN d.initial_value IN ('NaN', 'Infinity', '-Infinity')
                  THEN 'initial_value is ' || d.initial_value::text
                WHEN coalesce(s.nonfinite_rows, 0) > 0
                  THEN s.nonfinite_rows || ' non-finite transaction_value row(s) in its history'
           END AS reason
    FROM initial_data d LEFT JOIN balance_sync_provider_sums s ON s.provider_id = d.id
  ) p ORDER BY provider_id;
  SELECT key FROM balance_sync_published_keys;`;

// A minute is written at most once, in the normal case: after its KeyDB write an attempt records the
// boundary, and a retried attempt (which may follow a live attempt the server timed out, one that has
// already written) checks it just before writing. Attempt 1 checks only when it is about to write
// late (a stalled attempt the server timed out may resume after its retry wrote): that keeps the round
// trip off the ±1 s path. What remains: an attempt
// that dies (or loses Postgres) between its KeyDB write and the record, or a retry that checks in the
// few ms between the two, lets the retry write the minute again, late, with balances as of the retry.
// That takes a crash or a timeout within one round trip of the write, and the values then written are
// still true balances of a moment just after the minute; closing it would need the marker written in
// KeyDB's own MULTI, i.e. a non-balance key in the store readers consume.
/** A first attempt writing later than this after its minute checks whether a retry already did. */
const LATE_FIRST_ATTEMPT_MS = 500;

const MINUTE_ALREADY_PUBLISHED = `
  SELECT EXISTS (SELECT 1 FROM balance_sync_sync_state WHERE last_published_boundary >= $1) AS published`;

/** Whether this minute (or a later one) has already reached KeyDB. */
async function minuteAlreadyPublished(pool: pg.Pool, boundary: Date): Promise<boolean> {
  const { rows } = await pool.query<{ published: boolean }>(MINUTE_ALREADY_PUBLISHED, [boundary]);
  return rows[0]?.published === true;
}

/**
 * Records the write (the minute for the retry fence, and the balance history) in one transaction;
 * a failure is logged, counted and reported, the write stands.
 */
async function recordWrite(pool: pg.Pool, metrics: AppMetrics, publication: Publication): Promise<boolean> {
  try {
    await recordPublication(pool, publication);
    return true;
  } catch (error) {
    metrics.balanceHistoryUnrecorded.inc();
    const boundary = publication.boundary?.toISOString();
    log.warn(
      boundary
        ? 'balances written, but the minute could not be recorded: a retry would write it again'
        : 'balances written, but could not be recorded in the balance history',
      { boundary, writtenAt: publication.writtenAt.toISOString(), error: (error as Error).message },
    );
    return false;
  }
}

type BalanceRow = { provider_id: number; key: string | null; balance: string | null; reason: string | null };
type Balances = { rows: BalanceRow[]; published: string[]; triggers: number };

async function readBalances(pool: pg.Pool): Promise<Balances> {
  const results = (await pool.query(READ_BALANCES)) as unknown as pg.QueryResult[];
  const [triggers, balances, published] = results;
  return {
    triggers: (triggers?.rows[0] as { count: number } | undefined)?.count ?? 0,
    rows: (balances?.rows ?? []) as BalanceRow[],
    published: (published?.rows ?? []).map((row) => (row as { key: string }).key),
  };
}

/** Reads the balances, reinstalling the triggers first if someone recreated historical_transactions. */
async function readCurrentBalances(pool: pg.Pool) {
  const balances = await readBalances(pool);
  if (balances.triggers === EXPECTED_TRIGGER_COUNT) return { balances, triggersReinstalled: false };
  log.warn('balance triggers missing on historical_transactions; reinstalling and recounting');
  await migrate(pool);
  return { balances: await readBalances(pool), triggersReinstalled: true };
}

/** What to write and delete: keys of unpublishable providers are neither written nor removed. */
function planWrite({ rows, published }: Balances) {
  const writable = rows.filter((row): row is BalanceRow & { key: string; balance: string } => !row.reason);
  const unpublishable = rows
    .filter((row) => row.reason)
    .map((row) => ({ providerId: row.provider_id, key: row.key, reason: row.reason! }));
  const held = new Set(unpublishable.map((p) => `${p.providerId}_`));
  const current = new Set(writable.map((row) => row.key));
  const known = new Set(published);
  return {
    writable,
    unpublishable,
    newKeys: [...current].filter((key) => !known.has(key)),
    staleKeys: published.filter((key) => !current.has(key) && !held.has(`${key.split('_')[0]}_`)),
  };
}

/** Throws instead of writing once this attempt was cancelled or is about to time out. */
function assertMayWrite(context: Context) {
  const { info } = context;
  const deadlines = [
    info.startToCloseTimeoutMs && info.currentAttemptScheduledTimestampMs + info.startToCloseTimeoutMs,
    info.scheduleToCloseTimeoutMs && info.scheduledTimestampMs + info.scheduleToCloseTimeoutMs,
  ].filter((deadline): deadline is number => Boolean(deadline));
  if (context.cancellationSignal.aborted) {
    throw attemptStopped(`publishBalances attempt ${info.attempt} was cancelled; not writing KeyDB`);
  }
  if (deadlines.some((deadline) => Date.now() > deadline - WRITE_MARGIN_MS)) {
    throw attemptStopped(`publishBalances attempt ${info.attempt} reached its timeout; not writing KeyDB`);
  }
}

const attemptStopped = (message: string) => ApplicationFailure.retryable(message, ATTEMPT_STOPPED_ERROR);

async function writeKeydb(keydb: Redis, plan: ReturnType<typeof planWrite>) {
  const transaction = keydb.multi();
  if (plan.writable.length > 0) transaction.mset(...plan.writable.flatMap((row) => [row.key, row.balance]));
  if (plan.staleKeys.length > 0) transaction.del(...plan.staleKeys);
  const replies = await transaction.exec();
  const failed = replies?.find(([error]) => error);
  if (!replies || failed) throw failed?.[0] ?? new Error('KeyDB discarded the MULTI transaction');
}

/** Heartbeats until stopped, so a dead worker's attempt times out in seconds, not at startToClose. */
function startHeartbeat(context: Context): () => void {
  context.heartbeat();
  const timer = setInterval(() => context.heartbeat(), SYNC_HEARTBEAT_INTERVAL_MS);
  return () => clearInterval(timer);
}

/** Warms both connections (so the boundary pays for no handshake), then sleeps until the boundary. */
async function waitForBoundary(context: Context, pool: pg.Pool, keydb: Redis, boundary: Date) {
  await Promise.all([pool.query('SELECT 1'), keydb.ping()]);
  const wait = boundary.getTime() - Date.now();
  if (wait > 0) await sleep(wait, undefined, { signal: context.cancellationSignal });
}

/** A retry that found its minute published: it writes nothing and says so. */
function skippedRetry(metrics: AppMetrics, boundary: Date, attempt: number, readMs: number) {
  metrics.syncRetriesSkipped.inc();
  log.warn('retry not writing: this minute was already published by an earlier attempt', {
    boundary: boundary.toISOString(),
    attempt,
  });
  return {
    writtenAt: null,
    writeOffsetMs: null,
    alreadyPublished: true,
    boundaryRecorded: true,
    historyRecorded: false,
    readMs,
  };
}

/**
 * Waits on the wall clock for the minute boundary, then reads every provider's balance from Postgres
 * (exact NUMERIC, printed as Postgres prints it) and writes all keys to KeyDB in one MULTI/EXEC.
 * Keys of providers that no longer exist are deleted in the same step, and `onMinuteWritten` is told
 * (the bridge then starts ingest again if it held it for the minute). A retried attempt waits for
 * the same boundary (it comes from the nominal time), or writes at once if that has passed, unless
 * an earlier attempt already published that minute.
 */
export function createPublishBalances(
  pool: pg.Pool,
  keydb: Redis,
  metrics: AppMetrics,
  onMinuteWritten: (minute: Date) => void = () => undefined,
) {
  return async function publishBalances(input: PublishBalancesInput): Promise<PublishBalancesResult> {
    const context = Context.current();
    const { attempt } = context.info;
    const stopHeartbeat = startHeartbeat(context);
    try {
      const boundary = boundaryFor(new Date(input.nominalTime), input.leadMs);
      if (boundary) await waitForBoundary(context, pool, keydb, boundary);
      const readStart = performance.now();
      const { balances, triggersReinstalled } = await readCurrentBalances(pool);
      const readMs = Math.round((performance.now() - readStart) * 100) / 100;
      const plan = planWrite(balances);
      if (plan.newKeys.length > 0) {
        // Record a key before it is first written, so a crash can never orphan it in KeyDB.
        await pool.query(
          'INSERT INTO balance_sync_published_keys (key) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING',
          [plan.newKeys],
        );
      }
      const unwritten = { boundary: boundary?.toISOString() ?? null, triggersReinstalled, writeMs: 0 };
      const mayBeSecond = attempt > 1 || Date.now() - (boundary?.getTime() ?? 0) > LATE_FIRST_ATTEMPT_MS;
      if (boundary && mayBeSecond && (await minuteAlreadyPublished(pool, boundary))) {
        onMinuteWritten(boundary);
        const skipped = skippedRetry(metrics, boundary, attempt, readMs);
        return { ...unwritten, ...skipped, providers: 0, unpublishable: [], keysRemoved: [] };
      }
      assertMayWrite(context);
      const writeStart = performance.now();
      await writeKeydb(keydb, plan);
      const writtenAt = Date.now();
      if (boundary) onMinuteWritten(boundary);
      const writeMs = performance.now() - writeStart;
      const writeOffsetMs = boundary ? writtenAt - boundary.getTime() : null;
      const { workflowId, runId } = context.info.workflowExecution ?? {};
      const recorded = await recordWrite(pool, metrics, {
        boundary,
        writtenAt: new Date(writtenAt),
        writeOffsetMs,
        workflowId: workflowId ?? '',
        runId: runId ?? '',
        attempt,
        written: plan.writable,
        removed: plan.staleKeys,
      });
      if (plan.staleKeys.length > 0) {
        await pool.query('DELETE FROM balance_sync_published_keys WHERE key = ANY($1::text[])', [
          plan.staleKeys,
        ]);
      }
      report(metrics, boundary, writeOffsetMs, plan.unpublishable, attempt);
      return {
        ...unwritten,
        writtenAt: new Date(writtenAt).toISOString(),
        writeOffsetMs,
        alreadyPublished: false,
        boundaryRecorded: boundary !== null && recorded,
        historyRecorded: recorded,
        providers: plan.writable.length,
        unpublishable: plan.unpublishable,
        keysRemoved: plan.staleKeys,
        readMs,
        writeMs: Math.round(writeMs * 100) / 100,
      };
    } finally {
      stopHeartbeat();
    }
  };
}

function report(
  metrics: AppMetrics,
  boundary: Date | null,
  writeOffsetMs: number | null,
  unpublishable: UnpublishableProvider[],
  attempt: number,
) {
  metrics.syncUnpublishableProviders.set(unpublishable.length);
  if (unpublishable.length > 0) {
    log.warn('balances not published for some providers; KeyDB keeps their last good value', {
      unpublishable,
    });
  }
  if (writeOffsetMs === null) return;
  metrics.syncWriteOffsetSeconds.observe(writeOffsetMs / 1000);
  if (Math.abs(writeOffsetMs) > SLOW_WRITE_WARN_MS) {
    // A retry that finds no record of its minute still writes it: late beats never.
    log.warn('balances written late', { boundary: boundary?.toISOString(), writeOffsetMs, attempt });
  }
}
