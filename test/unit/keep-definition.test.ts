import type { ScheduleDescription, ScheduleHandle } from '@temporalio/client';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { createMetrics } from '../../src/metrics.js';
import { createDefinitionKeeper } from '../../src/schedules/keep-definition.js';
import { managedSchedules } from '../../src/schedules/schedules.js';

describe('keeping a schedule definition', () => {
  it('counts and warns when an edited schedule cannot be written back, and reports the error', async () => {
    const metrics = createMetrics();
    const lines: { msg: string; err?: string }[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line)) });
    const { sync } = managedSchedules({
      taskQueue: 'balance-sync-sync',
      syncScheduleId: 'sync-balances',
      syncLeadSeconds: 5,
      reconcileScheduleId: 'reconcile-balances',
      reconcileCron: '17 * * * *',
    });
    // No stamp of the app's: edited (replaced) at runtime, to be written back.
    const description = {
      action: { type: 'startWorkflow', staticDetails: undefined },
      state: { paused: false },
    } as unknown as ScheduleDescription;
    const handle = {
      update: () => Promise.reject(new Error('PERMISSION_DENIED: schedule update not allowed')),
      describe: () => Promise.resolve(description),
    } as unknown as ScheduleHandle;

    const kept = await createDefinitionKeeper(metrics, log)(sync, handle, description);

    expect(kept).toEqual({ error: 'PERMISSION_DENIED: schedule update not allowed' });
    const failures = await metrics.syncScheduleRestoreFailures.get();
    expect(failures.values.find((v) => v.labels.schedule === 'sync')?.value).toBe(1);
    expect(lines).toContainEqual(
      expect.objectContaining({
        msg: 'schedule sync-balances was changed and cannot be restored now',
        err: 'PERMISSION_DENIED: schedule update not allowed',
      }),
    );
  });
});
