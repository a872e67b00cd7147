import type { Redis } from 'ioredis';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PublishBalancesResult } from '../../src/activities/index.js';
import type { App } from '../../src/app.js';
import type { Config } from '../../src/config.js';
import {
  pool,
  resetDatabase,
  resetKeydb,
  startTestApp,
  stopTestApp,
  testConfig,
} from '../support/harness.js';

/** The one test that waits for a real minute boundary (up to about a minute). */
describe('SyncBalances on its schedule', () => {
  let db: pg.Pool;
  let keydb: Redis;
  let config: Config;
  let app: App;

  beforeAll(async () => {
    db = pool();
    await resetDatabase(db);
    keydb = await resetKeydb();
    config = testConfig();
    app = await startTestApp(config);
  });

  afterAll(async () => {
    await stopTestApp(app, config);
    keydb.disconnect();
    await db.end();
  });

  it('writes KeyDB within 1 s of the next minute boundary on the system clock', async () => {
    // The boundary of the schedule's next tick (the tick comes SYNC_LEAD_SECONDS early): asking the
    // schedule, not the clock, so a schedule created inside the lead window waits for the minute after.
    const leadMs = config.SYNC_LEAD_SECONDS * 1000;
    await keydb.set('1_Visa', 'sentinel');
    const sentinelAt = Date.now();
    const { info } = await app.client.schedule.getHandle(config.SYNC_SCHEDULE_ID).describe();
    const tick = info.nextActionTimes.find((at) => at.getTime() + leadMs > sentinelAt + 500);
    expect(tick).toBeDefined();
    const boundary = tick!.getTime() + leadMs;
    expect(boundary % 60_000).toBe(0);
    // Watch KeyDB as a client would: poll until the value changes, and note when.
    let changedAt = 0;
    while (Date.now() < boundary + 5_000) {
      if ((await keydb.get('1_Visa')) !== 'sentinel') {
        changedAt = Date.now();
        break;
      }
    }
    const observedOffset = changedAt - boundary;
    expect(changedAt).toBeGreaterThan(0);
    expect(Math.abs(observedOffset)).toBeLessThan(1_000);
    expect(await keydb.mget('1_Visa', '2_Mastercard')).toEqual(['1300', '1800']);

    // The run reports its own offset, and is identified by the schedule's nominal time.
    const description = await app.client.schedule.getHandle(config.SYNC_SCHEDULE_ID).describe();
    const action = description.info.recentActions.find((a) => a.scheduledAt.getTime() === boundary - leadMs);
    expect(action).toBeDefined();
    const result: PublishBalancesResult = await app.client.workflow
      .getHandle(action!.action.workflow.workflowId)
      .result();
    expect(result.boundary).toBe(new Date(boundary).toISOString());
    expect(result.writeOffsetMs).toBeGreaterThanOrEqual(0);
    expect(result.writeOffsetMs).toBeLessThan(1_000);
  }, 90_000);
});
