// Pure timing rules of the minute sync, shared by the config, the schedule, the SyncBalances workflow (it runs in
// the workflow sandbox, so: no I/O, type imports only) and the publishBalances activity.
import type { ActivityOptions } from '@temporalio/common';

const MINUTE_MS = 60_000;
/** A run whose nominal time plus the lead is this close to a minute targets that minute. */
const BOUNDARY_TOLERANCE_MS = 1_000;

/** Largest SYNC_LEAD_SECONDS: the lead must leave the read, the write and retries room before the next tick. */
export const MAX_SYNC_LEAD_SECONDS = 30;

/**
 * The error type of a publishBalances attempt that stopped itself, cancelled or at its deadline: like
 * a timeout, it says when the attempt ended, not why the minute was not written.
 */
export const ATTEMPT_STOPPED_ERROR = 'PublishAttemptStopped';

/** How often publishBalances heartbeats, from its start to its write (also the worker's throttle cap). */
export const SYNC_HEARTBEAT_INTERVAL_MS = 300;

export interface SyncTiming {
  /**
   * The run's timeout. A run starts at its tick, the next tick is 60 s later: 55 s lets every run end
   * (and SKIP drop nothing) before the next one, whatever the lead.
   */
  runTimeoutMs: number;
  /** All attempts of publishBalances end by then (5 s before the run's timeout). */
  scheduleToCloseTimeoutMs: number;
  /** One attempt: the wait (lead plus the boundary tolerance) plus 10 s for the read and the write. */
  startToCloseTimeoutMs: number;
  /**
   * A worker that dies is noticed within this, so another worker retries and still writes within a
   * second of `:00` after a crash 2.5 s before it (heartbeats every SYNC_HEARTBEAT_INTERVAL_MS, 5
   * per timeout). Measured takeover: 0.09 s late at 1.5 s, 0.7–1.0 s late at 2 s. The cost: a
   * server too starved to record heartbeats for 1.5 s times a live attempt out; if it wrote before
   * learning so, the retry finds the minute recorded and skips it, otherwise the retry writes it late
   * (docs/BENCHMARKS.md).
   */
  heartbeatTimeoutMs: number;
  /** First retry delay: short, since a retry inside the lead window must still make the boundary. */
  retryInitialIntervalMs: number;
}

/** The timeouts of a sync with this lead; throws for a lead the sync cannot honour. */
export function syncTiming(leadSeconds: number): SyncTiming {
  if (!Number.isInteger(leadSeconds) || leadSeconds < 0 || leadSeconds > MAX_SYNC_LEAD_SECONDS) {
    throw new RangeError(`SYNC_LEAD_SECONDS must be a whole number from 0 to ${MAX_SYNC_LEAD_SECONDS}`);
  }
  const runTimeoutMs = 55_000;
  const scheduleToCloseTimeoutMs = runTimeoutMs - 5_000;
  return {
    runTimeoutMs,
    scheduleToCloseTimeoutMs,
    startToCloseTimeoutMs: Math.min(
      leadSeconds * 1000 + BOUNDARY_TOLERANCE_MS + 10_000,
      scheduleToCloseTimeoutMs,
    ),
    heartbeatTimeoutMs: 5 * SYNC_HEARTBEAT_INTERVAL_MS,
    retryInitialIntervalMs: 100,
  };
}

/**
 * publishBalances' options for a run with this lead (ms; null for an on-demand run). Never throws: a
 * lead out of range (only a hand-started run can carry one) is clamped rather than failing the run.
 */
export function publishActivityOptions(leadMs: number | null, summary: string): ActivityOptions {
  const leadSeconds = Math.min(Math.max(Math.ceil((leadMs ?? 0) / 1000), 0), MAX_SYNC_LEAD_SECONDS);
  const timing = syncTiming(Number.isFinite(leadSeconds) ? leadSeconds : 0);
  return {
    startToCloseTimeout: timing.startToCloseTimeoutMs,
    scheduleToCloseTimeout: timing.scheduleToCloseTimeoutMs,
    heartbeatTimeout: timing.heartbeatTimeoutMs,
    retry: { initialInterval: timing.retryInitialIntervalMs, backoffCoefficient: 2, maximumInterval: 5_000 },
    summary,
  };
}

/**
 * A racing writer's first attempt is started at once by its instance's idle worker; one that waits
 * this long is on a queue whose instance died after it was listed, and fails (not retried), so the
 * run is left to the other writer.
 */
export const RACING_WRITER_START_TIMEOUT_MS = 2_000;

/** publishBalances' options for one of a minute's two racing writers, on one instance's own queue. */
export function racingWriterOptions(leadMs: number, summary: string, taskQueue: string): ActivityOptions {
  return {
    ...publishActivityOptions(leadMs, summary),
    taskQueue,
    scheduleToStartTimeout: RACING_WRITER_START_TIMEOUT_MS,
  };
}

/** The minute boundary a run with this nominal time targets, or null if it is not a scheduled tick. */
export function boundaryFor(nominalTime: Date, leadMs: number | null): Date | null {
  if (leadMs === null) return null;
  const target = nominalTime.getTime() + leadMs;
  const minute = Math.round(target / MINUTE_MS) * MINUTE_MS;
  return Math.abs(target - minute) <= BOUNDARY_TOLERANCE_MS ? new Date(minute) : null;
}

/** "balances at 13:16:00Z", what a run publishes, for its summary and details. */
export function publishesLabel(boundary: Date | null): string {
  return boundary
    ? `balances at ${boundary.toISOString().slice(11, 19)}Z (${boundary.toISOString().slice(0, 10)})`
    : 'balances now (triggered or backfilled run)';
}
