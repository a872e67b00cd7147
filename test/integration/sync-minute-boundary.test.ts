import { Redis } from 'ioredis';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../../src/app.js';
import type { Config } from '../../src/config.js';
import {
  keyChangedAt,
  nextScheduledBoundary,
  pool,
  resetDatabase,
  scheduledRunResult,
  startTestApp,
  stopTestApp,
  testConfig,
} from '../support/harness.js';
import { startThrowawayRedis, type ThrowawayService } from '../support/throwaway-services.js';

/**
 * The one test that waits for a real minute boundary (up to about a minute). It runs beside the other
 * integration files (vitest.config.ts), so it has its own Redis and its project's own database.
 */
describe('SyncBalances on its schedule', () => {
  let db: pg.Pool;
  let keydb: Redis;
  let config: Config;
  let app: App;
  let redis: ThrowawayService;

  beforeAll(async () => {
    db = pool();
    await resetDatabase(db);
    redis = await startThrowawayRedis();
    keydb = new Redis(redis.url);
    config = testConfig({ KEYDB_URL: redis.url });
    app = await startTestApp(config);
  });

  afterAll(async () => {
    try {
      await stopTestApp(app, config);
      keydb?.disconnect();
      await db.end();
    } finally {
      await redis?.stop();
    }
  });

  it('writes KeyDB within 1 s of the next minute boundary on the system clock', async () => {
    await keydb.set('1_Visa', 'sentinel');
    const boundary = await nextScheduledBoundary(app, config, Date.now());
    expect(boundary % 60_000).toBe(0);
    // Watch KeyDB as a client would: poll until the value changes, and note when.
    const changedAt = await keyChangedAt(keydb, '1_Visa', 'sentinel', boundary + 5_000);
    const observedOffset = changedAt - boundary;
    expect(changedAt).toBeGreaterThan(0);
    expect(Math.abs(observedOffset)).toBeLessThan(1_000);
    expect(await keydb.mget('1_Visa', '2_Mastercard')).toEqual(['1300', '1800']);

    // The run reports its own offset, and is identified by the schedule's nominal time.
    const result = await scheduledRunResult(app, config, boundary);
    expect(result.boundary).toBe(new Date(boundary).toISOString());
    expect(result.writeOffsetMs).toBeGreaterThanOrEqual(0);
    expect(result.writeOffsetMs).toBeLessThan(1_000);
  }, 90_000);
});
