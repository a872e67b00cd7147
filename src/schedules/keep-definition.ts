import type { ScheduleDescription, ScheduleHandle } from '@temporalio/client';
import type { Logger } from 'pino';
import type { AppMetrics } from '../metrics.js';
import { checkDefinition, stampPending, writeDefinition } from './definition-stamp.js';
import { scheduleDifferences } from './schedule-differences.js';
import type { ManagedSchedule } from './schedules.js';

/** What keeping a schedule's definition did: restored it (these changes), left it, or failed. */
export interface Kept {
  restored?: string[];
  otherSettings?: boolean;
  error?: string;
}

/**
 * Keeps what the app owns of a schedule (spec, action, policies) as its definition says, and never
 * its state: a pause and its note are the operator's. An edit made at runtime is written back, with
 * a warn line naming each change (before → after) and `sync_schedule_restored_total{schedule}`. A
 * schedule last written by an instance with other settings (a rolling deploy, or two deployments
 * that disagree, or another release's stamp) is left as it is, with a warn line once and
 * `sync_schedule_other_settings` 1: restoring it would make the two fight every look. A restore
 * that fails warns and counts in `sync_schedule_restore_failures_total{schedule}`; the next look
 * tries again. A stamp that was never completed (pending: a stamp that failed after a create) is
 * renewed, with an info line and `sync_schedule_stamp_renewed_total{schedule}`: a count that keeps
 * rising means a rewrite loop.
 */
export function createDefinitionKeeper(metrics: AppMetrics, log: Logger) {
  const otherSettingsSeen = new Map<string, string>();
  return async (
    schedule: ManagedSchedule,
    handle: ScheduleHandle,
    description: ScheduleDescription,
  ): Promise<Kept> => {
    const { scheduleId, definition, name } = schedule;
    const check = checkDefinition(description, definition);
    metrics.syncScheduleOtherSettings.set({ schedule: name }, check.kind === 'other-settings' ? 1 : 0);
    if (check.kind === 'other-settings') {
      if (otherSettingsSeen.get(scheduleId) !== check.theirs) {
        otherSettingsSeen.set(scheduleId, check.theirs);
        log.warn(
          { scheduleId, theirs: check.theirs, ours: check.ours },
          `schedule ${scheduleId} was written by an instance with other settings or another release: leaving it as it is`,
        );
      }
      return { otherSettings: true };
    }
    if (otherSettingsSeen.delete(scheduleId)) {
      log.info({ scheduleId }, `schedule ${scheduleId} has this instance's definition again`);
    }
    if (check.kind === 'same') return {};
    let restored: ScheduleDescription;
    try {
      restored = await writeDefinition(handle, definition);
    } catch (error) {
      const message = (error as Error).message;
      metrics.syncScheduleRestoreFailures.inc({ schedule: name });
      log.warn({ scheduleId, err: message }, `schedule ${scheduleId} was changed and cannot be restored now`);
      return { error: message };
    }
    const changes = scheduleDifferences(description, restored);
    if (changes.length === 0 && stampPending(description)) {
      metrics.syncScheduleStampRenewed.inc({ schedule: name });
      log.info({ scheduleId }, `schedule ${scheduleId}: definition stamp renewed, nothing had changed`);
      return {};
    }
    // A stored fingerprint that differs with nothing visible: an edit of a field the SDK does not show.
    if (changes.length === 0) changes.push('(fields the SDK does not show)');
    metrics.syncScheduleRestored.inc({ schedule: name });
    log.warn(
      { scheduleId, changes },
      `schedule ${scheduleId} was changed at runtime; restored: ${changes.join('; ')}`,
    );
    return { restored: changes };
  };
}
