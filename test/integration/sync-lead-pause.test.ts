import { decodeTimeoutType } from '@temporalio/common';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PublishBalancesResult } from '../../src/activities/index.js';
import type { App } from '../../src/app.js';
import type { Config } from '../../src/config.js';
import { keyChangedAt, startTestApp, stopTestApp, testConfig, waitFor } from '../support/harness.js';
import { isolatedStores, type IsolatedStores } from '../support/isolated-stores.js';

const MINUTE = 60_000;
const LEAD_SECONDS = 30;

/** The largest lead (30 s), and a pause made inside its lead window: the run that fired still publishes. */
describe(`SyncBalances with SYNC_LEAD_SECONDS=${LEAD_SECONDS}, paused during the lead window`, () => {
  let stores: IsolatedStores;
  let keydb: Redis;
  let config: Config;
  let app: App;

  beforeAll(async () => {
    stores = await isolatedStores('balance_sync_lead');
    ({ keydb } = stores);
    config = testConfig({ ...stores.overrides, SYNC_LEAD_SECONDS: String(LEAD_SECONDS) });
    app = await startTestApp(config);
  });

  afterAll(async () => {
    await stopTestApp(app, config);
    await stores?.stop();
  });

  it('publishes the minute whose run already fired, on time, failing no attempt (a missed heartbeat aside), and no minute after', async () => {
    const schedule = app.client.schedule.getHandle(config.SYNC_SCHEDULE_ID);
    expect((await schedule.describe()).state.note).toMatch(/fires 30 s before each minute/);
    // The first boundary whose tick (30 s before it) is still 2 s away.
    const boundary = Math.ceil((Date.now() + LEAD_SECONDS * 1000 + 2_000) / MINUTE) * MINUTE;
    const tick = boundary - LEAD_SECONDS * 1000;
    // A scheduled run's id is the action's workflow id and its nominal time (RFC 3339, seconds).
    const workflowId = `${config.SYNC_SCHEDULE_ID}-${new Date(tick).toISOString().replace('.000', '')}`;
    await waitFor(
      'the run of this minute, in its lead window',
      async () =>
        (await app.client.workflow.getHandle(workflowId).describe()).status.name === 'RUNNING'
          ? true
          : undefined,
      MINUTE + 10_000,
    );
    await keydb.set('1_Visa', 'sentinel');
    await schedule.pause('maintenance (sync-lead-pause test)');

    const changedAt = await keyChangedAt(keydb, '1_Visa', 'sentinel', boundary + 5_000);
    expect(changedAt).toBeGreaterThan(0);
    expect(Math.abs(changedAt - boundary)).toBeLessThan(1_000);
    expect(await keydb.mget('1_Visa', '2_Mastercard')).toEqual(['1300', '1800']);
    const handle = app.client.workflow.getHandle(workflowId);
    const result: PublishBalancesResult = await handle.result();
    expect(result.boundary).toBe(new Date(boundary).toISOString());
    expect(result.writeOffsetMs).toBeLessThan(1_000);
    const { events } = await handle.fetchHistory();
    const started = events!.find(
      (e) => e.activityTaskStartedEventAttributes,
    )?.activityTaskStartedEventAttributes;
    // The pause neither cancelled nor failed the attempt. The one retry allowed is a heartbeat the
    // starved server did not record within 1.5 s (CI runs four suites on two cores; over a 30 s wait
    // that happens): the product's own answer to it is the retry, still on time, as checked above.
    if (started?.attempt !== 1) {
      expect(decodeTimeoutType(started?.lastFailure?.timeoutFailureInfo?.timeoutType)).toBe('HEARTBEAT');
      expect(started?.attempt).toBe(2);
    }
    // The run names the minute it publishes.
    const scheduled = events!.find((e) => e.activityTaskScheduledEventAttributes);
    expect(scheduled?.userMetadata?.summary?.data?.toString()).toContain(
      `balances at ${new Date(boundary).toISOString().slice(11, 19)}Z`,
    );

    // Paused: the next tick (30 s after the boundary) starts nothing, and KeyDB keeps this minute.
    await keydb.set('1_Visa', 'after-pause');
    const nextTick = boundary + MINUTE - LEAD_SECONDS * 1000;
    expect(await keyChangedAt(keydb, '1_Visa', 'after-pause', nextTick + 3_000, 100)).toBe(0);
    const description = await schedule.describe();
    expect(description.state).toMatchObject({ paused: true, note: 'maintenance (sync-lead-pause test)' });
    expect(description.info.recentActions.map((a) => a.scheduledAt.getTime())).not.toContain(nextTick);
  }, 180_000);
});
