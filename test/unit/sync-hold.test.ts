import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  HOLD_AFTER_MINUTE_MS,
  HOLD_BEFORE_FIRE_MS,
  MAX_HOLD_BEFORE_MINUTE_MS,
  SyncHold,
} from '../../src/sync-hold.js';
import { createMetrics } from '../../src/metrics.js';

const MINUTE = 60_000;
const LEAD_MS = 5_000;
/** A minute boundary, and the moment its hold may begin (the schedule fires LEAD_MS before it). */
const BOUNDARY = Date.UTC(2026, 11, 4, 2, 0, 0);
const HOLD_FROM = BOUNDARY - Math.min(LEAD_MS + HOLD_BEFORE_FIRE_MS, MAX_HOLD_BEFORE_MINUTE_MS);

describe('SyncHold: new ingest starts wait for the minute’s sync while ingest is saturated', () => {
  let saturated: boolean;
  let metrics: ReturnType<typeof createMetrics>;
  const hold = (leadMs = LEAD_MS) =>
    new SyncHold({ leadMs, saturated: () => saturated }, { metrics, log: pino({ level: 'silent' }) });
  const sample = async (name: string) =>
    (await metrics.registry.getSingleMetric(name)!.get()).values[0]?.value ?? 0;

  beforeEach(() => {
    vi.useFakeTimers();
    saturated = true;
    metrics = createMetrics();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('holds from just before the schedule fires until this process has written the minute', async () => {
    const subject = hold();
    vi.setSystemTime(HOLD_FROM - 1);
    expect(subject.holding()).toBe(false);
    vi.setSystemTime(HOLD_FROM);
    expect(subject.holding()).toBe(true);
    expect(await sample('balance_sync_bridge_sync_holding')).toBe(1);

    let over = false;
    const waiting = subject.wait(new AbortController().signal).then(() => (over = true));
    vi.setSystemTime(BOUNDARY + 40);
    await Promise.resolve();
    expect(over).toBe(false);
    subject.written(new Date(BOUNDARY));
    await waiting;
    expect(subject.holding()).toBe(false);
    expect(await sample('balance_sync_bridge_sync_holds_total')).toBe(1);
    expect(await sample('balance_sync_bridge_sync_held_seconds_total')).toBeCloseTo(
      (LEAD_MS + HOLD_BEFORE_FIRE_MS + 40) / 1000,
    );
    expect(await sample('balance_sync_bridge_sync_holding')).toBe(0);
  });

  it('says whether a hold is on or ended within a window, for the backlog watch', () => {
    const subject = hold();
    vi.setSystemTime(HOLD_FROM - 1);
    expect(subject.heldWithin(10_000)).toBe(false);
    vi.setSystemTime(HOLD_FROM);
    subject.holding();
    expect(subject.heldWithin(0)).toBe(true);
    vi.setSystemTime(BOUNDARY + 40);
    subject.written(new Date(BOUNDARY));
    vi.setSystemTime(BOUNDARY + 41);
    expect(subject.heldWithin(0)).toBe(false);
    vi.setSystemTime(BOUNDARY + 40 + 10_000);
    expect(subject.heldWithin(10_000)).toBe(true);
    vi.setSystemTime(BOUNDARY + 40 + 10_001);
    expect(subject.heldWithin(10_000)).toBe(false);
  });

  it('ends by itself shortly after the minute when the write is not seen here (the sync ran elsewhere or failed)', async () => {
    const subject = hold();
    vi.setSystemTime(BOUNDARY - 2_000);
    expect(subject.holding()).toBe(true);
    let over = false;
    const waiting = subject.wait(new AbortController().signal).then(() => (over = true));
    await vi.advanceTimersByTimeAsync(2_000 + HOLD_AFTER_MINUTE_MS - 1);
    expect(over).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    await waiting;
    expect(subject.holding()).toBe(false);
    // The next minute holds again.
    vi.setSystemTime(BOUNDARY + MINUTE - LEAD_MS);
    expect(subject.holding()).toBe(true);
    expect(await sample('balance_sync_bridge_sync_holds_total')).toBe(2);
  });

  it('holds nothing while ingest is below its bound, and decides once per minute', async () => {
    const subject = hold();
    saturated = false;
    vi.setSystemTime(HOLD_FROM + 100);
    expect(subject.holding()).toBe(false);
    // Saturated later in the same window: still no hold for this minute (no flapping mid-window).
    saturated = true;
    vi.setSystemTime(BOUNDARY - 100);
    expect(subject.holding()).toBe(false);
    // Decided saturated at the next minute: the hold stays even once the in-flight count has dropped.
    vi.setSystemTime(BOUNDARY + MINUTE - LEAD_MS);
    expect(subject.holding()).toBe(true);
    saturated = false;
    expect(subject.holding()).toBe(true);
    expect(await sample('balance_sync_bridge_sync_holds_total')).toBe(1);
  });

  it('with SYNC_LEAD_SECONDS=0 holds only from just before the minute', () => {
    const subject = hold(0);
    vi.setSystemTime(BOUNDARY - HOLD_BEFORE_FIRE_MS - 1);
    expect(subject.holding()).toBe(false);
    vi.setSystemTime(BOUNDARY - HOLD_BEFORE_FIRE_MS);
    expect(subject.holding()).toBe(true);
    subject.written(new Date(BOUNDARY));
    expect(subject.holding()).toBe(false);
  });

  it('with a long lead holds only the last seconds before the minute, not the whole lead', () => {
    const subject = hold(30_000);
    vi.setSystemTime(BOUNDARY - 30_000);
    expect(subject.holding()).toBe(false);
    vi.setSystemTime(BOUNDARY - MAX_HOLD_BEFORE_MINUTE_MS - 1);
    expect(subject.holding()).toBe(false);
    vi.setSystemTime(BOUNDARY - MAX_HOLD_BEFORE_MINUTE_MS);
    expect(subject.holding()).toBe(true);
  });

  it('a write of the minute seen before its window opens means no hold for it', () => {
    const subject = hold();
    vi.setSystemTime(HOLD_FROM - 10);
    subject.written(new Date(BOUNDARY));
    vi.setSystemTime(HOLD_FROM + 10);
    expect(subject.holding()).toBe(false);
  });

  it('lets a waiting start go when shutdown aborts it, and stop() releases the rest', async () => {
    const subject = hold();
    vi.setSystemTime(BOUNDARY - 1_000);
    const aborted = new AbortController();
    const first = subject.wait(aborted.signal);
    const second = subject.wait(new AbortController().signal);
    aborted.abort(new Error('stopping'));
    await expect(first).rejects.toThrow('stopping');
    vi.setSystemTime(BOUNDARY - 500);
    subject.stop();
    await expect(second).resolves.toBeUndefined();
    expect(await sample('balance_sync_bridge_sync_holding')).toBe(0);
    expect(await sample('balance_sync_bridge_sync_held_seconds_total')).toBeGreaterThan(0);
    // Stopped: the next minute's window holds nothing.
    vi.setSystemTime(BOUNDARY + MINUTE - 1_000);
    expect(subject.holding()).toBe(false);
  });
});
