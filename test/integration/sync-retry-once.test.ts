import { MockActivityEnvironment } from '@temporalio/testing';
import type { Redis } from 'ioredis';
import type pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createActivities } from '../../src/activities/index.js';
import type { PublishBalancesInput } from '../../src/activities/index.js';
import { createMetrics } from '../../src/metrics.js';
import { migrate } from '../../src/postgres/schema.js';
import { pool, resetDatabase, resetKeydb, rows } from '../support/harness.js';

const LEAD_MS = 5_000;
const MINUTE_MS = 60_000;

/** The input of the scheduled run that publishes `boundary` (fired LEAD_MS before it). */
const scheduledRun = (boundary: Date): PublishBalancesInput => ({
  nominalTime: new Date(boundary.getTime() - LEAD_MS).toISOString(),
  leadMs: LEAD_MS,
});

/** Attempt `attempt` of publishBalances, with no timeout that could stop it writing. */
const attemptEnv = (attempt: number) =>
  new MockActivityEnvironment({ attempt, startToCloseTimeoutMs: 0, scheduleToCloseTimeoutMs: 0 });

describe('publishBalances writes a minute at most once across its attempts', () => {
  let db: pg.Pool;
  let keydb: Redis;
  let publishBalances: ReturnType<typeof createActivities>['publishBalances'];
  // Minutes already past, so no attempt waits for its boundary.
  const minute = Math.floor(Date.now() / MINUTE_MS) * MINUTE_MS;
  const earlier = new Date(minute - 2 * MINUTE_MS);
  const later = new Date(minute - MINUTE_MS);
  const recordedBoundary = async () =>
    (await rows(db, 'SELECT last_published_boundary FROM balance_sync_sync_state'))[0]
      ?.last_published_boundary as Date | undefined;

  beforeAll(async () => {
    db = pool();
    await resetDatabase(db);
    await migrate(db);
    keydb = await resetKeydb();
    ({ publishBalances } = createActivities({ pool: db, keydb, metrics: createMetrics() }));
  });

  beforeEach(async () => {
    await keydb.flushdb();
  });

  afterAll(async () => {
    keydb.disconnect();
    await db.end();
  });

  it('attempt 1 writes the minute and records it as published', async () => {
    const result = await attemptEnv(1).run(publishBalances, scheduledRun(earlier));
    expect(result).toMatchObject({
      boundary: earlier.toISOString(),
      alreadyPublished: false,
      boundaryRecorded: true,
    });
    expect(await keydb.mget('1_Visa', '2_Mastercard')).toEqual(['1300', '1800']);
    expect(await recordedBoundary()).toEqual(earlier);
  });

  it('attempt 2 of a minute already published writes nothing and reports alreadyPublished', async () => {
    await keydb.set('1_Visa', 'written by attempt 1');
    const result = await attemptEnv(2).run(publishBalances, scheduledRun(earlier));
    expect(result).toMatchObject({
      boundary: earlier.toISOString(),
      alreadyPublished: true,
      writtenAt: null,
      providers: 0,
    });
    expect(await keydb.get('1_Visa')).toBe('written by attempt 1');
    expect(await keydb.exists('2_Mastercard')).toBe(0);
  });

  it('a late attempt 1 (stalled, timed out) writes nothing once its retry published the minute', async () => {
    await keydb.set('1_Visa', 'written by attempt 2');
    const result = await attemptEnv(1).run(publishBalances, scheduledRun(earlier));
    expect(result).toMatchObject({ alreadyPublished: true, writtenAt: null });
    expect(await keydb.get('1_Visa')).toBe('written by attempt 2');
  });

  it('attempt 2 of a minute not yet recorded writes it (late beats never) and records it', async () => {
    const result = await attemptEnv(2).run(publishBalances, scheduledRun(later));
    expect(result).toMatchObject({
      boundary: later.toISOString(),
      alreadyPublished: false,
      boundaryRecorded: true,
    });
    expect(await keydb.mget('1_Visa', '2_Mastercard')).toEqual(['1300', '1800']);
    expect(await recordedBoundary()).toEqual(later);
  });

  it('a retry of an older minute, after a newer one was published, writes nothing', async () => {
    const result = await attemptEnv(3).run(publishBalances, scheduledRun(earlier));
    expect(result).toMatchObject({ boundary: earlier.toISOString(), alreadyPublished: true });
    expect(await keydb.exists('1_Visa')).toBe(0);
  });

  it('an older minute written out of order does not move the record back', async () => {
    await attemptEnv(1).run(publishBalances, scheduledRun(earlier));
    expect(await recordedBoundary()).toEqual(later);
  });

  it('an on-demand run (no boundary) writes whatever the record says and leaves it as it is', async () => {
    const result = await attemptEnv(2).run(publishBalances, {
      nominalTime: new Date().toISOString(),
      leadMs: null,
    });
    expect(result).toMatchObject({ boundary: null, alreadyPublished: false, boundaryRecorded: false });
    expect(await keydb.get('1_Visa')).toBe('1300');
    expect(await recordedBoundary()).toEqual(later);
  });
});
