import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { syncBalancesSchedule } from '../../src/schedules/schedules.js';
import {
  SYNC_HEARTBEAT_INTERVAL_MS,
  publishActivityOptions,
  publishesLabel,
  syncTiming,
} from '../../src/sync-timing.js';

const settings = {
  taskQueue: 'q',
  syncScheduleId: 'sync-balances',
  syncLeadSeconds: 5,
  reconcileScheduleId: 'reconcile-balances',
  reconcileCron: '17 * * * *',
};

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
      // An attempt hung after the boundary times out within 11 s of the tick's lead, leaving room for retries.
      expect(timing.startToCloseTimeoutMs).toBeLessThanOrEqual(leadMs + 11_000);
      // A dead worker is noticed and retried well inside a 2.5 s window before the minute, while a live
      // one may miss a few heartbeats without being timed out.
      expect(timing.heartbeatTimeoutMs + timing.retryInitialIntervalMs).toBeLessThanOrEqual(2_500);
      expect(timing.heartbeatTimeoutMs).toBeGreaterThanOrEqual(3 * SYNC_HEARTBEAT_INTERVAL_MS);
      expect(syncBalancesSchedule({ ...settings, syncLeadSeconds: lead }).action).toMatchObject({
        workflowRunTimeout: timing.runTimeoutMs,
      });
      expect(publishActivityOptions(leadMs, 'x')).toMatchObject({
        startToCloseTimeout: timing.startToCloseTimeoutMs,
        scheduleToCloseTimeout: timing.scheduleToCloseTimeoutMs,
        heartbeatTimeout: timing.heartbeatTimeoutMs,
        retry: { initialInterval: timing.retryInitialIntervalMs },
        summary: 'x',
      });
    },
  );

  it('refuses 31 s (the first lead not allowed), negative and fractional leads, with one error naming SYNC_LEAD_SECONDS', () => {
    for (const lead of [31, -1, 1.5, Number.NaN]) expect(() => syncTiming(lead)).toThrow(/SYNC_LEAD_SECONDS/);
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

describe('publishesLabel', () => {
  it('names the minute a run publishes, as its summary in the Web UI shows it', () => {
    expect(publishesLabel(new Date('2026-11-26T13:16:00Z'))).toBe('balances at 13:16:00Z (2026-11-26)');
    expect(publishesLabel(null)).toBe('balances now (triggered or backfilled run)');
  });
});
