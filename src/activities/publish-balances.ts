import { ApplicationFailure, Context, log } from '@temporalio/activity';
import { ReplyError, type Redis } from 'ioredis';
import type pg from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';
import { KEYDB_COMMAND_TIMEOUT_MS } from '../keydb/client.js';
import {
  fencedWriterFor,
  keydbClockOffset,
  withinCommandTimeout,
  writeFenced,
  type FenceOutcome,
  type FencedWrite,
} from '../keydb/fenced-write.js';
import type { AppMetrics } from '../metrics.js';
import { postgresClockSkew, reportClockSkew, temporalClockSkew } from './clock-skew.js';
import { COUNT_BALANCE_TRIGGERS_SQL, EXPECTED_TRIGGER_COUNT, migrate } from '../postgres/schema.js';
import { ATTEMPT_STOPPED_ERROR, SYNC_HEARTBEAT_INTERVAL_MS, boundaryFor } from '../sync-timing.js';
import {
  forgetUnconfirmedWrite,
  noteUnconfirmedWrite,
  recordPublication,
  type Publication,
} from './record-publication.js';

export interface PublishBalancesInput {
  /** The schedule's nominal time for this run (TemporalScheduledStartTime), ISO 8601. */
  nominalTime: string;
  /** How far before the minute the schedule fires (the activity holds until the minute); null to publish now. */
  leadMs: number | null;
  /** One of two writers racing for the minute (src/workflows/sync-balances.ts): losing is expected. */
  racing?: boolean;
}

/**
 * A provider whose balance is not published this run; KeyDB is given its last good value, the last
 * one the balance history recorded for its key (none if it never had one).
 */
export interface UnpublishableProvider {
  providerId: number;
  /** Its KeyDB key, or null when provider_name is NULL. */
  key: string | null;
  reason: string;
}

export interface PublishBalancesResult {
  /** The minute boundary this run wrote for, or null for an off-minute run (trigger, backfill). */
  boundary: string | null;
  /** When KeyDB was written; null when this attempt wrote nothing (alreadyPublished, or refused as stale). */
  writtenAt: string | null;
  /** When KeyDB applied the write by its own TIME (the history's instant); null when nothing was written. */
  keydbWrittenAt: string | null;
  /** KeyDB write time minus the boundary, in ms; null for an off-minute run or when nothing was written. */
  writeOffsetMs: number | null;
  /** Another attempt had already written this minute to KeyDB (the fence said so): this one wrote nothing. */
  alreadyPublished: boolean;
  /**
   * Set when KeyDB refused this write as stale (never applied): the newer minute it already held. The
   * run then ends without error, since KeyDB holds newer balances than this run could write.
   */
  newerMinuteInKeydb: string | null;
  /**
   * Whether the minute is now recorded as published (balance_sync_sync_state, read by the sync watch);
   * false for an off-minute run, or when recording failed after the write (logged).
   */
  boundaryRecorded: boolean;
  /**
   * Whether this write is in the balance history (recorded in the same transaction as the minute);
   * when not, its unconfirmed note stays and the history shows a gap where it may have applied.
   */
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
 * is given up (KEYDB_COMMAND_TIMEOUT_MS) while the attempt is still its run's only one. KeyDB itself
 * refuses the write once that wait is over (its deadline, on KeyDB's clock), so a write given up on,
 * by a timed-out attempt or any other, is never applied later.
 */
const WRITE_MARGIN_MS = KEYDB_COMMAND_TIMEOUT_MS + 500;
/** The wait for `:00` ends at least this long before WRITE_MARGIN_MS, leaving room for the read. */
const READ_ROOM_MS = 3_000;

// A provider is published only when its balance is a finite number: a NaN or ±Infinity anywhere in its
// history (counted by the triggers in nonfinite_rows) or in initial_value, or a NULL, holds it back.
// A held-back key is written with its last good value, the balance history's latest for it, so a
// KeyDB that lost it (FLUSHDB, eviction, a restart without persistence) has it again at the next
// minute, and KeyDB and the history agree on every key after each recorded minute.
const READ_BALANCES = `
  ${COUNT_BALANCE_TRIGGERS_SQL};
  SELECT provider_id, p.key, CASE WHEN reason IS NULL THEN balance END AS balance, reason,
         CASE WHEN reason IS NOT NULL THEN h.value END AS last_good FROM (
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
  ) p LEFT JOIN balance_sync_balance_current h ON h.key = p.key ORDER BY provider_id;
  SELECT key FROM balance_sync_published_keys;`;

// Which minute KeyDB holds is decided in KeyDB (src/keydb/fenced-write.ts), atomically with the write:
// a minute is written once (a retry, or a stalled first attempt that resumes after its retry wrote,
// finds it written by another attempt and writes nothing), and never after a newer minute, from this
// worker or any other. Postgres' record of the minute only reports, and feeds the history.
const MINUTE_RECORDED = `
  SELECT EXISTS (SELECT 1 FROM balance_sync_sync_state WHERE last_published_boundary >= $1) AS published`;

/** Whether this minute (or a later one) is recorded as published. */
async function minuteRecorded(pool: pg.Pool, boundary: Date): Promise<boolean> {
  const { rows } = await pool.query<{ published: boolean }>(MINUTE_RECORDED, [boundary]);
  return rows[0]?.published === true;
}

/**
 * Records the write (the minute, and the balance history) in one transaction; a failure is logged,
 * counted and reported, the write stands, and its unconfirmed note leaves a gap in the history.
 */
async function recordWrite(
  pool: pg.Pool,
  metrics: AppMetrics,
  publication: Publication,
): Promise<{ boundaryRecorded: boolean; historyRecorded: boolean }> {
  const boundary = publication.boundary?.toISOString();
  const what = { boundary, writtenAt: publication.writtenAt.toISOString(), writer: publication.writer };
  try {
    const historyRecorded = await recordPublication(pool, publication);
    if (!historyRecorded) {
      metrics.balanceHistoryUnrecorded.inc();
      log.warn('balances written before a later write already recorded: the history shows a gap there', what);
    }
    return { boundaryRecorded: publication.boundary !== null, historyRecorded };
  } catch (error) {
    metrics.balanceHistoryUnrecorded.inc();
    log.warn(
      boundary
        ? 'balances written, but the minute could not be recorded: the history has a gap'
        : 'balances written, but could not be recorded in the balance history: it has a gap',
      { ...what, error: (error as Error).message },
    );
    return { boundaryRecorded: false, historyRecorded: false };
  }
}

/** A write KeyDB refused was never applied: its note goes, leaving no gap (a failure only logs). */
async function forgetWrite(pool: pg.Pool, writer: string): Promise<void> {
  try {
    await forgetUnconfirmedWrite(pool, writer);
  } catch (error) {
    log.warn('KeyDB refused a write, but its note could not be removed: the history shows a gap there', {
      writer,
      error: (error as Error).message,
    });
  }
}

/**
 * Notes the write before it is sent (throws, not writing, if Postgres cannot take the note): from now
 * on KeyDB's clock (its TIME at warm-up plus the time elapsed on the monotonic clock, less the
 * reading's uncertainty, so a worker clock stepped since moves it not at all) until the write's
 * deadline there, after which the fence refuses it.
 */
async function noteWrite(pool: pg.Pool, write: FencedWrite, clock: Clock): Promise<void> {
  const keydbNowMs = clock.keydbMs + (performance.now() - clock.readAt);
  await noteUnconfirmedWrite(pool, {
    writer: write.writer,
    minute: write.minuteMs === null ? null : new Date(write.minuteMs),
    mayApplyFrom: new Date(Math.floor(keydbNowMs - clock.uncertaintyMs)),
    mayApplyUntil: new Date(write.deadlineKeydbMs),
  });
}

type BalanceRow = {
  provider_id: number;
  key: string | null;
  balance: string | null;
  reason: string | null;
  last_good: string | null;
};
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

/**
 * What to write and delete: keys of unpublishable providers are never removed, and are written with
 * their last good value (`restored`) when the history has one.
 */
function planWrite({ rows, published }: Balances) {
  const writable = rows.filter((row): row is BalanceRow & { key: string; balance: string } => !row.reason);
  const restored = rows.flatMap((row) =>
    row.reason && row.key && row.last_good !== null ? [{ key: row.key, balance: row.last_good }] : [],
  );
  const unpublishable = rows
    .filter((row) => row.reason)
    .map((row) => ({ providerId: row.provider_id, key: row.key, reason: row.reason! }));
  const held = new Set(unpublishable.map((p) => `${p.providerId}_`));
  const current = new Set(writable.map((row) => row.key));
  const known = new Set(published);
  return {
    writable,
    restored,
    unpublishable,
    newKeys: [...current].filter((key) => !known.has(key)),
    staleKeys: published.filter((key) => !current.has(key) && !held.has(`${key.split('_')[0]}_`)),
  };
}

/**
 * When this attempt times out, on this process's monotonic clock: the server's deadlines (its own
 * clock) are taken relative to the attempt's scheduled stamp and counted from when the attempt reached
 * this worker, so a worker clock off from Temporal's moves them not at all. They read late only by the
 * task's dispatch time (milliseconds), well inside WRITE_MARGIN_MS.
 */
function attemptDeadline({ info }: Context, receivedAt: number): number {
  const scheduled = info.currentAttemptScheduledTimestampMs;
  const deadlines = [
    info.startToCloseTimeoutMs && scheduled + info.startToCloseTimeoutMs,
    info.scheduleToCloseTimeoutMs && info.scheduledTimestampMs + info.scheduleToCloseTimeoutMs,
  ].filter((deadline): deadline is number => Boolean(deadline));
  return receivedAt + Math.min(...deadlines.map((deadline) => deadline - scheduled));
}

/** Throws instead of writing once this attempt was cancelled or is about to time out. */
function assertMayWrite(context: Context, deadline: number) {
  const { info } = context;
  if (context.cancellationSignal.aborted) {
    throw attemptStopped(`publishBalances attempt ${info.attempt} was cancelled; not writing KeyDB`);
  }
  if (performance.now() > deadline - WRITE_MARGIN_MS) {
    throw attemptStopped(`publishBalances attempt ${info.attempt} reached its timeout; not writing KeyDB`);
  }
}

const attemptStopped = (message: string) => ApplicationFailure.retryable(message, ATTEMPT_STOPPED_ERROR);

/** KeyDB's clock as read at warm-up: its offset, and its TIME `keydbMs` at `readAt` (performance.now()). */
type Clock = Awaited<ReturnType<typeof keydbClockOffset>> & { keydbMs: number; readAt: number };

/**
 * The fenced write of this plan. Its deadline is when this attempt gives up waiting for the reply,
 * on KeyDB's clock (the offset measured at warm-up, plus its uncertainty in KeyDB's favour).
 */
function fencedWrite(
  context: Context,
  plan: ReturnType<typeof planWrite>,
  input: PublishBalancesInput,
  boundary: Date | null,
  clock: Clock,
) {
  const { info } = context;
  // An on-demand run (no minute) may follow the minutes written before it asked for current balances,
  // not after: its nominal time, or when its activity was scheduled for a backfill (nominal long past).
  const askedAt = Math.max(Date.parse(input.nominalTime), info.scheduledTimestampMs);
  return {
    minuteMs: boundary?.getTime() ?? null,
    notBeforeMs: boundary?.getTime() ?? askedAt,
    deadlineKeydbMs: Math.ceil(Date.now() + KEYDB_COMMAND_TIMEOUT_MS + clock.offsetMs + clock.uncertaintyMs),
    writer: `${info.workflowExecution?.runId ?? ''}/${info.activityId}/${info.attempt}`,
    set: [...plan.writable, ...plan.restored].map((row) => ({ key: row.key, value: row.balance })),
    del: plan.staleKeys,
  } satisfies FencedWrite;
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** Counts and names a write KeyDB refused; `givenUp`: its answer came after this attempt stopped waiting. */
function reportRefusal(
  metrics: AppMetrics,
  { outcome, fenceMinuteMs, keydbNowMs }: FenceOutcome,
  write: FencedWrite,
  attempt: number,
  givenUp: boolean,
) {
  const what = { minute: iso(write.minuteMs) ?? 'none (on demand)', attempt, givenUp };
  if (outcome === 'stale') {
    metrics.keydbWritesRefused.inc({ reason: 'stale' });
    log.warn('KeyDB refused a stale write: a newer minute is already there; not applied', {
      ...what,
      newerMinute: iso(fenceMinuteMs),
    });
  } else if (outcome === 'past_deadline') {
    metrics.keydbWritesRefused.inc({ reason: 'past_deadline' });
    log.warn('KeyDB refused a write that reached it after its deadline; not applied', {
      ...what,
      lateMs: keydbNowMs - write.deadlineKeydbMs,
    });
  } else if (outcome === 'applied' && givenUp) {
    log.warn('KeyDB applied a write just after this attempt gave up on it', what);
  }
}

/**
 * Sends the write and waits for KeyDB's answer as long as any KeyDB command (KEYDB_COMMAND_TIMEOUT_MS),
 * then fails as one does; an answer that comes later is still counted and logged, and given to
 * `settleLate` (to record it or forget its note).
 */
async function writeKeydb(
  writer: Redis,
  metrics: AppMetrics,
  write: FencedWrite,
  attempt: number,
  settleLate: (late: FenceOutcome) => Promise<unknown>,
) {
  const sent = writeFenced(writer, write);
  try {
    return await withinCommandTimeout(sent);
  } catch (error) {
    sent.then(
      (late) => {
        reportRefusal(metrics, late, write, attempt, true);
        return settleLate(late);
      },
      () => undefined,
    );
    throw error;
  }
}

/** Heartbeats until stopped, so a dead worker's attempt times out in seconds, not at startToClose. */
function startHeartbeat(context: Context): () => void {
  context.heartbeat();
  const timer = setInterval(() => context.heartbeat(), SYNC_HEARTBEAT_INTERVAL_MS);
  return () => clearInterval(timer);
}

/**
 * Warms both connections (so the boundary pays for no handshake), reads Postgres's and KeyDB's clocks
 * and reports each skew with Temporal's, then sleeps until the boundary on this worker's clock, if
 * there is one: its own `:00`, however far off Temporal's. A clock so far behind that its `:00` comes
 * after the attempt's deadline wakes early enough to still write (as close to `:00` as it can).
 */
async function warmUp(
  context: Context,
  { pool, writer, metrics }: { pool: pg.Pool; writer: Redis; metrics: AppMetrics },
  boundary: Date | null,
  attempt: { receivedAtMs: number; deadline: number },
): Promise<Clock> {
  const [postgres, clock] = await Promise.all([
    postgresClockSkew(pool),
    keydbClockOffset(writer).then((read) => ({
      ...read,
      keydbMs: Date.now() + read.offsetMs,
      readAt: performance.now(),
    })),
  ]);
  reportClockSkew(metrics, {
    temporal: temporalClockSkew(attempt.receivedAtMs, context.info.currentAttemptScheduledTimestampMs),
    postgres,
    keydb: { skewMs: -clock.offsetMs, uncertaintyMs: clock.uncertaintyMs },
  });
  const latestWake = attempt.deadline - WRITE_MARGIN_MS - READ_ROOM_MS;
  const wait = Math.min((boundary?.getTime() ?? 0) - Date.now(), latestWake - performance.now());
  if (wait > 0) await sleep(wait, undefined, { signal: context.cancellationSignal });
  return clock;
}

/** An attempt whose minute another attempt had written: it wrote nothing and says so. */
function skippedRetry(metrics: AppMetrics, boundary: Date, attempt: number) {
  metrics.syncRetriesSkipped.inc();
  log.warn('retry not writing: this minute was already published by an earlier attempt', {
    boundary: boundary.toISOString(),
    attempt,
  });
}

/** A racing writer whose minute the other writer published first: the race working as meant. */
function lostRace(boundary: Date, attempt: number) {
  log.info('racing writer not writing: the other writer published this minute first', {
    boundary: boundary.toISOString(),
    attempt,
  });
}

/** Records keys before they are first written, so a crash can never orphan one in KeyDB. */
async function rememberKeys(pool: pg.Pool, keys: string[]): Promise<void> {
  if (keys.length === 0) return;
  await pool.query(
    'INSERT INTO balance_sync_published_keys (key) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING',
    [keys],
  );
}

/** Forgets keys once their deletion from KeyDB was applied. */
async function forgetKeys(pool: pg.Pool, keys: string[]): Promise<void> {
  if (keys.length === 0) return;
  await pool.query('DELETE FROM balance_sync_published_keys WHERE key = ANY($1::text[])', [keys]);
}

/**
 * The result of an attempt KeyDB did not apply (`already` or `stale`), after saying why: the loser
 * of two racing writers is an info line, a retry of a minute already written a skipped retry, a
 * stale write a refusal.
 */
async function unwrittenResult(
  pool: pg.Pool,
  metrics: AppMetrics,
  boundary: Date | null,
  {
    fence,
    write,
    attempt,
    racing,
  }: { fence: FenceOutcome; write: FencedWrite; attempt: number; racing: boolean },
  timings: { readMs: number; triggersReinstalled: boolean },
): Promise<PublishBalancesResult> {
  const result = {
    boundary: boundary?.toISOString() ?? null,
    writtenAt: null,
    keydbWrittenAt: null,
    writeOffsetMs: null,
    alreadyPublished: fence.outcome === 'already',
    newerMinuteInKeydb: fence.outcome === 'stale' ? iso(fence.fenceMinuteMs) : null,
    boundaryRecorded: boundary !== null && (await minuteRecorded(pool, boundary)),
    historyRecorded: false,
    providers: 0,
    unpublishable: [],
    keysRemoved: [],
    readMs: timings.readMs,
    writeMs: 0,
    triggersReinstalled: timings.triggersReinstalled,
  };
  if (boundary && fence.outcome === 'already' && racing) lostRace(boundary, attempt);
  else if (boundary && fence.outcome === 'already') skippedRetry(metrics, boundary, attempt);
  else reportRefusal(metrics, fence, write, attempt, false);
  return result;
}

/**
 * Waits on the wall clock for the minute boundary, then reads every provider's balance from Postgres
 * (exact NUMERIC, printed as Postgres prints it) and writes all keys to KeyDB in one fenced script.
 * Keys of providers that no longer exist are deleted in the same step, and `onMinuteWritten` is told
 * (the bridge then starts ingest again if it held it for the minute). A retried attempt waits for
 * the same boundary (it comes from the nominal time), or writes at once if that has passed. KeyDB
 * applies the write only if no other attempt wrote that minute, no newer minute is there and its
 * deadline has not passed (src/keydb/fenced-write.ts).
 */
export function createPublishBalances(
  pool: pg.Pool,
  keydb: Redis,
  metrics: AppMetrics,
  onMinuteWritten: (minute: Date) => void = () => undefined,
) {
  return async function publishBalances(input: PublishBalancesInput): Promise<PublishBalancesResult> {
    const receivedAtMs = Date.now();
    const context = Context.current();
    const { attempt } = context.info;
    const deadline = attemptDeadline(context, performance.now());
    const stopHeartbeat = startHeartbeat(context);
    try {
      const writer = fencedWriterFor(keydb);
      const boundary = boundaryFor(new Date(input.nominalTime), input.leadMs);
      const clock = await warmUp(context, { pool, writer, metrics }, boundary, { receivedAtMs, deadline });
      const readStart = performance.now();
      const { balances, triggersReinstalled } = await readCurrentBalances(pool);
      const readMs = Math.round((performance.now() - readStart) * 100) / 100;
      const plan = planWrite(balances);
      await rememberKeys(pool, plan.newKeys);
      assertMayWrite(context, deadline);
      const write = fencedWrite(context, plan, input, boundary, clock);
      const { workflowId, runId } = context.info.workflowExecution ?? {};
      const publication = (fence: FenceOutcome): Publication => ({
        boundary,
        writtenAt: new Date(fence.keydbNowMs),
        writeOffsetMs: boundary ? Date.now() - boundary.getTime() : null,
        workflowId: workflowId ?? '',
        runId: runId ?? '',
        attempt,
        writer: write.writer,
        written: [...plan.writable, ...plan.restored],
        removed: plan.staleKeys,
      });
      await noteWrite(pool, write, clock);
      const writeStart = performance.now();
      const fence = await writeKeydb(writer, metrics, write, attempt, (late) =>
        late.outcome === 'applied'
          ? recordWrite(pool, metrics, publication(late))
          : forgetWrite(pool, write.writer),
      ).catch(async (error: unknown) => {
        // KeyDB refused the script (OOM, READONLY: before anything was written): no gap. Any other
        // failure (timeout, connection lost) leaves the note, the write's outcome unknown.
        if (error instanceof ReplyError) await forgetWrite(pool, write.writer);
        throw error;
      });
      const writtenAt = Date.now();
      const writeMs = performance.now() - writeStart;
      if (fence.outcome !== 'applied') await forgetWrite(pool, write.writer);
      if (fence.outcome === 'past_deadline') {
        reportRefusal(metrics, fence, write, attempt, false);
        throw attemptStopped(
          `publishBalances attempt ${attempt}: KeyDB refused its write, past its deadline`,
        );
      }
      if (boundary) onMinuteWritten(boundary);
      if (fence.outcome !== 'applied') {
        const outcome = { fence, write, attempt, racing: input.racing === true };
        return await unwrittenResult(pool, metrics, boundary, outcome, { readMs, triggersReinstalled });
      }
      const writeOffsetMs = boundary ? writtenAt - boundary.getTime() : null;
      const recorded = await recordWrite(pool, metrics, { ...publication(fence), writeOffsetMs });
      await forgetKeys(pool, plan.staleKeys);
      report(metrics, boundary, writeOffsetMs, plan.unpublishable, attempt);
      return {
        boundary: boundary?.toISOString() ?? null,
        triggersReinstalled,
        writtenAt: new Date(writtenAt).toISOString(),
        keydbWrittenAt: new Date(fence.keydbNowMs).toISOString(),
        writeOffsetMs,
        alreadyPublished: false,
        newerMinuteInKeydb: null,
        ...recorded,
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
    // A retry whose minute no attempt wrote still writes it: late beats never.
    log.warn('balances written late', { boundary: boundary?.toISOString(), writeOffsetMs, attempt });
  }
}
