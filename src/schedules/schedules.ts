import {
  ScheduleAlreadyRunning,
  type Client,
  type ScheduleOptions,
  type ScheduleOptionsStartWorkflowAction,
} from '@temporalio/client';
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { Workflow } from '@temporalio/common';

export interface ScheduleSettings {
  taskQueue: string;
  syncScheduleId: string;
  /** Seconds before each minute at which the sync fires; its activity waits for the boundary. */
  syncLeadSeconds: number;
  reconcileScheduleId: string;
  reconcileCron: string;
}

type Definition = Pick<
  ScheduleOptions<ScheduleOptionsStartWorkflowAction<Workflow>>,
  'spec' | 'action' | 'policies'
>;

const FINGERPRINT_MEMO = 'balanceSyncScheduleFingerprint';

/**
 * SyncBalances: every minute in UTC, `syncLeadSeconds` early (0 gives plain `* * * * *`), no jitter.
 * Overlap SKIP: a run always ends before the next tick (run timeout below 60 s), so SKIP only ever
 * drops a run if one hangs, and then never lets two syncs write KeyDB at once. Catchup window 10 s
 * (the server's minimum): after an outage it does not replay stale minutes.
 */
export function syncBalancesSchedule(settings: ScheduleSettings): Definition {
  const lead = settings.syncLeadSeconds;
  return {
    spec: {
      calendars: [
        { second: lead === 0 ? 0 : 60 - lead, minute: '*', hour: '*', comment: 'every minute boundary' },
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
      workflowRunTimeout: `${55 - lead} seconds`,
    },
    policies: { overlap: 'SKIP', catchupWindow: '10 seconds', pauseOnFailure: false },
  };
}

/** ReconcileBalances: on its own cron (hourly by default); BUFFER_ONE so a slow run is not lost. */
export function reconcileBalancesSchedule(settings: ScheduleSettings): Definition {
  return {
    spec: { cronExpressions: [settings.reconcileCron], jitter: 0, timezone: 'UTC' },
    action: {
      type: 'startWorkflow',
      workflowType: 'ReconcileBalances',
      workflowId: settings.reconcileScheduleId,
      taskQueue: settings.taskQueue,
      args: [],
    },
    policies: { overlap: 'BUFFER_ONE', catchupWindow: '10 minutes', pauseOnFailure: false },
  };
}

function fingerprint(definition: Definition): string {
  return createHash('sha256').update(JSON.stringify(definition)).digest('hex').slice(0, 16);
}

/**
 * Creates the schedule, or updates it when its definition changed. Never touches its state: a
 * pause set with `temporal schedule toggle --pause` survives every restart. Safe to race.
 */
export async function ensureSchedule(
  client: Client,
  scheduleId: string,
  definition: Definition,
  log: Logger,
): Promise<'created' | 'updated' | 'unchanged'> {
  const print = fingerprint(definition);
  const action = { ...definition.action, memo: { [FINGERPRINT_MEMO]: print } };
  try {
    await client.schedule.create({ scheduleId, ...definition, action, state: { paused: false } });
    log.info({ scheduleId }, 'schedule created');
    return 'created';
  } catch (error) {
    if (!(error instanceof ScheduleAlreadyRunning)) throw error;
  }
  const handle = client.schedule.getHandle(scheduleId);
  const current = await handle.describe();
  const currentPrint =
    current.action.type === 'startWorkflow' ? current.action.memo?.[FINGERPRINT_MEMO] : undefined;
  if (currentPrint === print) return 'unchanged';
  await handle.update((previous) => ({ ...previous, ...definition, action, state: previous.state }));
  log.info({ scheduleId, paused: current.state.paused }, 'schedule definition updated');
  return 'updated';
}

export async function ensureSchedules(client: Client, settings: ScheduleSettings, log: Logger) {
  return {
    sync: await ensureSchedule(client, settings.syncScheduleId, syncBalancesSchedule(settings), log),
    reconcile: await ensureSchedule(
      client,
      settings.reconcileScheduleId,
      reconcileBalancesSchedule(settings),
      log,
    ),
  };
}
