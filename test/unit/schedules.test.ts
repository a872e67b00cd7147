import { describe, expect, it } from 'vitest';
import { boundaryFor } from '../../src/activities/publish-balances.js';
import { reconcileBalancesSchedule, syncBalancesSchedule } from '../../src/schedules/schedules.js';

const settings = {
  taskQueue: 'q',
  syncScheduleId: 'sync-balances',
  syncLeadSeconds: 5,
  reconcileScheduleId: 'reconcile-balances',
  reconcileCron: '17 * * * *',
};

describe('the sync schedule', () => {
  it('fires SYNC_LEAD_SECONDS before every minute, in UTC, without jitter, skipping overlaps', () => {
    const schedule = syncBalancesSchedule(settings);
    expect(schedule.spec).toMatchObject({
      calendars: [{ second: 55, minute: '*', hour: '*' }],
      jitter: 0,
      timezone: 'UTC',
    });
    expect(schedule.policies).toMatchObject({ overlap: 'SKIP', catchupWindow: '10 seconds' });
    expect(schedule.action).toMatchObject({
      workflowType: 'SyncBalances',
      args: [{ leadMs: 5000 }],
      workflowRunTimeout: '50 seconds',
    });
  });

  it('is plain `* * * * *` (second 0) with no lead', () => {
    expect(syncBalancesSchedule({ ...settings, syncLeadSeconds: 0 }).spec.calendars).toMatchObject([
      { second: 0 },
    ]);
  });

  it('reconciles on its own cron', () => {
    expect(reconcileBalancesSchedule(settings)).toMatchObject({
      spec: { cronExpressions: ['17 * * * *'] },
      action: { workflowType: 'ReconcileBalances' },
    });
  });
});

describe('boundaryFor', () => {
  it('maps a tick at :55 with a 5 s lead to the next minute', () => {
    expect(boundaryFor(new Date('2026-01-01T10:00:55Z'), 5000)?.toISOString()).toBe(
      '2026-01-01T10:01:00.000Z',
    );
  });

  it('tolerates a start up to a second off the tick', () => {
    expect(boundaryFor(new Date('2026-01-01T10:00:55.900Z'), 5000)?.toISOString()).toBe(
      '2026-01-01T10:01:00.000Z',
    );
  });

  it('gives no boundary for an off-minute run (a trigger) or without a lead (a backfill)', () => {
    expect(boundaryFor(new Date('2026-01-01T10:00:31Z'), 5000)).toBeNull();
    expect(boundaryFor(new Date('2026-01-01T10:00:55Z'), null)).toBeNull();
  });
});
