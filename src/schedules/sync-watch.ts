import { ScheduleNotFoundError, type Client, type ScheduleDescription } from '@temporalio/client';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { AppMetrics } from '../metrics.js';
import { createDefinitionKeeper, type Kept } from './keep-definition.js';
import { lastFailedRun } from './run-failure.js';
import {
  ensureSchedule,
  managedSchedules,
  pausedWarning,
  type ManagedSchedule,
  type ScheduleSettings,
} from './schedules.js';

export interface SyncWatchOptions {
  /** How often it looks: a deleted schedule is back, an edited one restored, a paused one reported, within this. */
  intervalMs: number;
  /** No minute published for this long means the sync has stopped. */
  staleAfterMs: number;
  /** While the sync is stopped, the warn line naming the cause repeats this often. */
  staleWarnEveryMs: number;
  /** While a schedule stays paused, its warning repeats this often. */
  pausedWarnEveryMs: number;
}

/** A stopped sync is reported within staleAfterMs + intervalMs (150 s) of its last minute. */
export const DEFAULT_SYNC_WATCH_OPTIONS: SyncWatchOptions = {
  intervalMs: 30_000,
  staleAfterMs: 120_000,
  staleWarnEveryMs: 60_000,
  pausedWarnEveryMs: 10 * 60_000,
};

export interface SyncWatchDeps {
  client: Client;
  pool: pg.Pool;
  settings: ScheduleSettings;
  metrics: AppMetrics;
  log: Logger;
  /** The readiness checks that fail now and why (KeyDB, Postgres, Temporal, the worker). */
  failingChecks: () => Record<string, string>;
}

/** What one look at a schedule found. */
type Seen = { paused: boolean; note?: string | undefined; recreated?: boolean; error?: string; kept?: Kept };

/** Bounds every Temporal call of one look, so a hung server cannot stall the watch or shutdown. */
const TEMPORAL_DEADLINE_MS = 10_000;

const LAST_PUBLISHED = 'SELECT last_published_boundary AS boundary FROM balance_sync_sync_state';

/**
 * Runs in every instance: every `intervalMs` it exports the minute last published (from Postgres),
 * re-creates a deleted sync or reconcile schedule (a warn line and a counter), restores one whose
 * spec, action or policies were edited at runtime (createDefinitionKeeper), warns when it finds a
 * schedule paused and again every `pausedWarnEveryMs` (a pause is an operator's decision: it stays),
 * and while no minute has been published for `staleAfterMs`, warns every `staleWarnEveryMs` with the
 * causes this instance can see.
 */
export function startSyncWatch(deps: SyncWatchDeps, options: SyncWatchOptions = DEFAULT_SYNC_WATCH_OPTIONS) {
  const { client, metrics, log } = deps;
  const schedules = managedSchedules(deps.settings);
  const startedAt = Date.now();
  const pausedWarnedAt = new Map<string, number>();
  const keepDefinition = createDefinitionKeeper(metrics, log);
  let lastPublished: Date | undefined;
  let staleWarnedAt: number | undefined;
  let timer: NodeJS.Timeout | undefined;
  let looking: Promise<void> | undefined;
  let stopped = false;
  let syncPaused = false;

  const readLastPublished = async () => {
    try {
      const { rows } = await deps.pool.query<{ boundary: Date }>(LAST_PUBLISHED);
      lastPublished = rows[0]?.boundary ?? lastPublished;
      if (lastPublished) metrics.syncLastPublished.set(lastPublished.getTime() / 1000);
    } catch {
      // Postgres is down: the readiness check names it, and the last value read stands.
    }
  };

  const look = async (schedule: ManagedSchedule): Promise<Seen> => {
    const { scheduleId } = schedule;
    const handle = client.schedule.getHandle(scheduleId);
    let description: ScheduleDescription;
    try {
      description = await handle.describe();
    } catch (error) {
      if (error instanceof ScheduleNotFoundError) return await recreate(deps, schedule);
      return { paused: false, error: (error as Error).message };
    }
    const { state } = description;
    if (!state.paused) pausedWarnedAt.delete(scheduleId);
    else if (Date.now() - (pausedWarnedAt.get(scheduleId) ?? -Infinity) >= options.pausedWarnEveryMs) {
      pausedWarnedAt.set(scheduleId, Date.now());
      log.warn({ scheduleId, note: state.note }, pausedWarning(scheduleId, schedule.options.pausedMeans));
    }
    const kept = await keepDefinition(schedule, handle, description);
    return { paused: state.paused, note: state.note, kept };
  };

  const lookOnce = async () => {
    await readLastPublished();
    const [sync] = await client.connection.withDeadline(Date.now() + TEMPORAL_DEADLINE_MS, () =>
      Promise.all([look(schedules.sync), look(schedules.reconcile)]),
    );
    if (!sync.error) {
      syncPaused = sync.paused;
      metrics.syncSchedulePaused.set(sync.paused ? 1 : 0);
    }
    const since = lastPublished ?? new Date(startedAt);
    const stale = Date.now() - since.getTime() >= options.staleAfterMs;
    if (!stale) {
      if (staleWarnedAt !== undefined) log.info({ lastPublished }, 'minutes are published to KeyDB again');
      staleWarnedAt = undefined;
      return;
    }
    if (staleWarnedAt !== undefined && Date.now() - staleWarnedAt < options.staleWarnEveryMs) return;
    staleWarnedAt = Date.now();
    const causes = await staleCauses(deps, sync, since);
    const seconds = Math.round((Date.now() - since.getTime()) / 1000);
    const what = lastPublished ? `for ${seconds} s` : `since this instance started ${seconds} s ago`;
    log.warn({ lastPublished, causes }, `no minute published to KeyDB ${what}: ${causes.join('; ')}`);
  };

  const loop = () => {
    looking = lookOnce()
      .catch((error: unknown) => log.warn({ err: (error as Error).message }, 'sync watch: look failed'))
      .finally(() => {
        if (!stopped) timer = setTimeout(loop, options.intervalMs);
      });
  };
  loop();
  return {
    /** Whether the sync schedule was paused at the last look that could tell. */
    syncPaused: () => syncPaused,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await looking;
    },
  };
}

/** A deleted schedule, created again: a warn line and `sync_schedule_recreated_total`. */
async function recreate({ client, metrics, log }: SyncWatchDeps, schedule: ManagedSchedule): Promise<Seen> {
  const { scheduleId, definition, options } = schedule;
  log.warn({ scheduleId }, `schedule ${scheduleId} was missing (deleted?): creating it again`);
  metrics.syncScheduleRecreated.inc({ schedule: schedule.name });
  await ensureSchedule(client, scheduleId, definition, log, options);
  return { paused: false, recreated: true };
}

/** Why no minute is published, as far as this instance can see. */
async function staleCauses(deps: SyncWatchDeps, sync: Seen, since: Date): Promise<string[]> {
  const { syncScheduleId, taskQueue } = deps.settings;
  const causes: string[] = [];
  if (sync.recreated) causes.push(`schedule ${syncScheduleId} was missing (created again now)`);
  if (sync.paused) causes.push(`schedule ${syncScheduleId} is paused (note: ${sync.note ?? 'none'})`);
  if (sync.error) causes.push(`schedule ${syncScheduleId} cannot be described: ${sync.error}`);
  const { restored, otherSettings, error } = sync.kept ?? {};
  if (restored) causes.push(`schedule ${syncScheduleId} had been changed at runtime (restored now)`);
  if (error) causes.push(`schedule ${syncScheduleId} was changed and cannot be restored: ${error}`);
  if (otherSettings) causes.push(`schedule ${syncScheduleId} was written by an instance with other settings`);
  for (const [check, reason] of Object.entries(deps.failingChecks()))
    causes.push(`${check} not ready: ${reason}`);
  const failed = await deps.client.connection
    .withDeadline(Date.now() + TEMPORAL_DEADLINE_MS, () =>
      lastFailedRun(deps.client, syncScheduleId, since, taskQueue),
    )
    .catch((error: unknown) => `recent runs cannot be listed: ${(error as Error).message}`);
  if (failed) causes.push(failed);
  if (causes.length === 0) causes.push(`no cause visible here: is a worker polling task queue ${taskQueue}?`);
  return causes;
}
