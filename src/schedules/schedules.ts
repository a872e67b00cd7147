import { ScheduleAlreadyRunning, type Client, type ScheduleHandle } from '@temporalio/client';
import type { Logger } from 'pino';
import { syncTiming } from '../sync-timing.js';
import {
  checkDefinition,
  stampStored,
  stampedAction,
  writeDefinition,
  type ScheduleDefinition,
} from './definition-stamp.js';
import { scheduleDifferences } from './schedule-differences.js';

export interface ScheduleSettings {
  taskQueue: string;
  syncScheduleId: string;
  /** Seconds before each minute at which the sync fires; its activity waits for the boundary. */
  syncLeadSeconds: number;
  reconcileScheduleId: string;
  reconcileCron: string;
}

/**
 * SyncBalances: every minute in UTC, `syncLeadSeconds` early (0 gives plain `* * * * *`), no jitter.
 * Overlap SKIP: a run always ends before the next tick (run timeout 55 s, whatever the lead), so SKIP
 * only ever drops a run if one hangs, and then never lets two syncs write KeyDB at once. Catchup
 * window 10 s (the server's minimum): after an outage it does not replay stale minutes.
 */
export function syncBalancesSchedule(settings: ScheduleSettings): ScheduleDefinition {
  const lead = settings.syncLeadSeconds;
  const timing = syncTiming(lead);
  return {
    spec: {
      calendars: [
        {
          second: lead === 0 ? 0 : 60 - lead,
          minute: '*',
          hour: '*',
          comment:
            lead === 0
              ? 'at every minute boundary'
              : `${lead} s before every minute boundary (SYNC_LEAD_SECONDS); the run publishes at :00`,
        },
      ],
      jitter: 0,
      timezone: 'UTC',
    },
    action: {
      type: 'startWorkflow',
      workflowType: 'SyncBalances',
      workflowId: settings.syncScheduleId,
      taskQueue: settings.taskQueue,
      args: [{ leadMs: lead * 1000 }],
      workflowRunTimeout: timing.runTimeoutMs,
      staticSummary:
        lead === 0
          ? 'balances at the minute this run starts'
          : `balances at the minute boundary ${lead} s after this run starts`,
    },
    policies: { overlap: 'SKIP', catchupWindow: '10 seconds', pauseOnFailure: false },
  };
}

/** The sync schedule's note while it runs, so `schedule describe` shows the lead. */
export function syncScheduleNote(settings: ScheduleSettings): string {
  return `${NOTE_PREFIX}fires ${settings.syncLeadSeconds} s before each minute (SYNC_LEAD_SECONDS); each run publishes the balances at the next :00`;
}

/** ReconcileBalances: on its own cron (hourly by default); BUFFER_ONE so a slow run is not lost. */
export function reconcileBalancesSchedule(settings: ScheduleSettings): ScheduleDefinition {
  return {
    spec: { cronExpressions: [settings.reconcileCron], jitter: 0, timezone: 'UTC' },
    action: {
      type: 'startWorkflow',
      workflowType: 'ReconcileBalances',
      workflowId: settings.reconcileScheduleId,
      taskQueue: settings.taskQueue,
      args: [],
      staticSummary: 'reconciles the running balance sums with the full aggregate',
    },
    policies: { overlap: 'BUFFER_ONE', catchupWindow: '10 minutes', pauseOnFailure: false },
  };
}

const NOTE_PREFIX = 'balance-sync: ';

/** The warning about a paused schedule, at start-up and from the sync watch. */
export function pausedWarning(scheduleId: string, pausedMeans: string): string {
  return `schedule ${scheduleId} is paused: ${pausedMeans} until it is unpaused`;
}

export interface EnsureOptions {
  /** The note to show while the schedule runs; never replaces a pause note (an operator's reason). */
  note?: string;
  /** What a pause found at start-up means, for the warning. */
  pausedMeans: string;
}

/**
 * Creates the schedule, or writes its definition when it differs from what the server holds: other
 * settings or another release's stamp, or an edit made at runtime (checkDefinition). Never touches
 * its pause state: a pause set with `temporal schedule toggle --pause` survives every restart, and
 * its note too (the start-up logs a warning instead). Safe to race. If stamping fails after the
 * create, it warns and still returns 'created': the watch renews the pending stamp.
 */
export async function ensureSchedule(
  client: Client,
  scheduleId: string,
  definition: ScheduleDefinition,
  log: Logger,
  options: EnsureOptions,
): Promise<'created' | 'updated' | 'unchanged'> {
  const handle = client.schedule.getHandle(scheduleId);
  const note = options.note;
  try {
    const action = stampedAction(definition);
    await client.schedule.create({ scheduleId, ...definition, action, state: { paused: false, note } });
  } catch (error) {
    if (!(error instanceof ScheduleAlreadyRunning)) throw error;
    return await ensureExisting(handle, definition, log, options);
  }
  try {
    await stampStored(handle, definition, note);
    log.info({ scheduleId }, 'schedule created');
  } catch (error) {
    // It exists and runs as defined: the watch renews its pending stamp on its next look.
    log.warn(
      { scheduleId, err: (error as Error).message },
      `schedule ${scheduleId} created; its definition stamp is pending (the sync watch completes it)`,
    );
  }
  return 'created';
}

/** Writes the definition over an existing schedule when it differs (or its running note is stale). */
async function ensureExisting(
  handle: ScheduleHandle,
  definition: ScheduleDefinition,
  log: Logger,
  options: EnsureOptions,
): Promise<'updated' | 'unchanged'> {
  const { scheduleId } = handle;
  const note = options.note;
  const current = await handle.describe();
  const { paused } = current.state;
  if (paused) {
    log.warn({ scheduleId, note: current.state.note }, pausedWarning(scheduleId, options.pausedMeans));
  }
  const noteStale = note !== undefined && !paused && current.state.note !== note;
  const same = checkDefinition(current, definition).kind === 'same';
  if (same && !noteStale) return 'unchanged';
  const written = await writeDefinition(handle, definition, note);
  const changes = scheduleDifferences(current, written);
  // The note is state, not definition: an unpause's reason, say, replaced by the running note.
  if (noteStale) changes.push(`state.note ${JSON.stringify(current.state.note)} → ${JSON.stringify(note)}`);
  log.info({ scheduleId, paused, changes }, same ? 'schedule note restored' : 'schedule definition updated');
  return 'updated';
}

/** A schedule this app owns: its ID, its definition, and how ensureSchedule treats it. */
export interface ManagedSchedule {
  /** Its `schedule` label in metrics. */
  name: 'sync' | 'reconcile';
  scheduleId: string;
  definition: ScheduleDefinition;
  options: EnsureOptions;
}

/** The two schedules the app creates at start-up and the sync watch keeps (re-created, restored). */
export function managedSchedules(settings: ScheduleSettings): {
  sync: ManagedSchedule;
  reconcile: ManagedSchedule;
} {
  return {
    sync: {
      name: 'sync',
      scheduleId: settings.syncScheduleId,
      definition: syncBalancesSchedule(settings),
      options: { note: syncScheduleNote(settings), pausedMeans: 'balances are not published to KeyDB' },
    },
    reconcile: {
      name: 'reconcile',
      scheduleId: settings.reconcileScheduleId,
      definition: reconcileBalancesSchedule(settings),
      options: { pausedMeans: 'balance sums are not reconciled on schedule' },
    },
  };
}

export async function ensureSchedules(client: Client, settings: ScheduleSettings, log: Logger) {
  const { sync, reconcile } = managedSchedules(settings);
  const ensure = (s: ManagedSchedule) => ensureSchedule(client, s.scheduleId, s.definition, log, s.options);
  return { sync: await ensure(sync), reconcile: await ensure(reconcile) };
}
