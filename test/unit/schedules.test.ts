import { describe, expect, it } from 'vitest';
import { boundaryFor } from '../../src/activities/sync-timing.js';
import { loadConfig } from '../../src/config.js';
import { reconcileBalancesSchedule, syncBalancesSchedule } from '../../src/schedules/schedules.js';
import { publishActivityOptions, syncTiming } from '../../src/activities/sync-timing.js';

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
      workflowRunTimeout: 55_000,
    });
  });

  it('names the second-55 calendar for what it is: 5 s before every minute boundary', () => {
    expect(syncBalancesSchedule(settings).spec.calendars?.[0]?.comment).toBe(
      '5 s before every minute boundary (SYNC_LEAD_SECONDS); the run publishes at :00',
    );
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

describe('sync timeouts derived from SYNC_LEAD_SECONDS', () => {
  const MINUTE = 60_000;
  it.each([0, 1, 14, 15, 29, 30])(
    'lead %i s: the wait fits one attempt, every attempt ends inside the run, the run before the next tick',
    (lead) => {
      const timing = syncTiming(lead);
      const leadMs = lead * 1000;
      // One attempt covers the whole wait (plus the 1 s boundary tolerance) and 10 s to read and write.
      expect(timing.startToCloseTimeoutMs).toBeGreaterThanOrEqual(leadMs + 1_000 + 10_000);
      // The write deadline (end of all attempts, from the tick) falls after the boundary...
      expect(timing.scheduleToCloseTimeoutMs - leadMs).toBeGreaterThanOrEqual(15_000);
      // ...all attempts end inside the run, and the run ends before the next tick (60 s after its own).
      expect(timing.startToCloseTimeoutMs).toBeLessThanOrEqual(timing.scheduleToCloseTimeoutMs);
      expect(timing.scheduleToCloseTimeoutMs).toBeLessThan(timing.runTimeoutMs);
      expect(timing.runTimeoutMs).toBeLessThan(MINUTE);
      // A dead worker is noticed and retried well inside a 2.5 s window before the minute.
      expect(timing.heartbeatTimeoutMs + timing.retryInitialIntervalMs).toBeLessThanOrEqual(2_500);
      expect(syncBalancesSchedule({ ...settings, syncLeadSeconds: lead }).action).toMatchObject({
        workflowRunTimeout: timing.runTimeoutMs,
      });
      expect(publishActivityOptions(leadMs, 'x')).toMatchObject({
        startToCloseTimeout: timing.startToCloseTimeoutMs,
        heartbeatTimeout: timing.heartbeatTimeoutMs,
      });
    },
  );

  it('refuses 31 s, the first lead that is not allowed, with one error naming SYNC_LEAD_SECONDS', () => {
    expect(() => syncTiming(31)).toThrow(/SYNC_LEAD_SECONDS/);
    expect(() => loadConfig({ SYNC_LEAD_SECONDS: '31' })).toThrow(
      /^Invalid configuration: SYNC_LEAD_SECONDS: [^;]*$/,
    );
    expect(loadConfig({ SYNC_LEAD_SECONDS: '30' }).SYNC_LEAD_SECONDS).toBe(30);
  });

  it('clamps a hand-started run carrying an out-of-range lead instead of failing it', () => {
    expect(publishActivityOptions(45_000, 'x').startToCloseTimeout).toBe(
      syncTiming(30).startToCloseTimeoutMs,
    );
    expect(publishActivityOptions(null, 'x').startToCloseTimeout).toBe(syncTiming(0).startToCloseTimeoutMs);
  });
});
