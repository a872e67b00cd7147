import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../../src/app.js';
import { HOLD_AFTER_MINUTE_MS, HOLD_BEFORE_FIRE_MS } from '../../src/bridge/sync-hold.js';
import type { Config } from '../../src/config.js';
import {
  appMetric,
  nextScheduledBoundary,
  publisher,
  scheduledRunResult,
  startTestApp,
  stopTestApp,
  testConfig,
  waitFor,
} from '../support/harness.js';
import { isolatedStores, type IsolatedStores } from '../support/isolated-stores.js';

const LEAD_SECONDS = 2;
/** How long before the hold the flood starts, so the throttle has closed (ingest saturated) by then. */
const FLOOD_LEAD_MS = 10_000;
/** More messages than the app can start between the flood and the minute, so ingest never idles. */
const MESSAGES = 2_000;
/** A start already past the gate when the hold began (provider check, start RPC) may land this much later. */
const IN_FLIGHT_SLACK_MS = 2_000;

const untilClock = (epochMs: number) =>
  new Promise((resolve) => setTimeout(resolve, Math.max(0, epochMs - Date.now())));

/**
 * A drain at full speed across a real minute boundary: with the throttle closing all the time, the
 * bridge starts no IngestTransaction from just before the sync fires until the minute is in KeyDB,
 * and starts again as soon as it is. Waits for one real boundary (up to about 75 s).
 */
describe('ingest saturated at a minute boundary (BRIDGE_HOLD_FOR_SYNC)', () => {
  let stores: IsolatedStores;
  let config: Config;
  let app: App;

  beforeAll(async () => {
    stores = await isolatedStores('balance_sync_hold');
    config = testConfig({
      ...stores.overrides,
      SYNC_LEAD_SECONDS: String(LEAD_SECONDS),
      BRIDGE_MAX_IN_FLIGHT: '4',
    });
    app = await startTestApp(config);
  });

  afterAll(async () => {
    await stopTestApp(app, config);
    await stores?.stop();
  });

  const startsBetween = async (fromMs: number, toMs: number) => {
    const query =
      `WorkflowType = 'IngestTransaction' AND TaskQueue = '${config.TEMPORAL_TASK_QUEUE}' AND ` +
      `StartTime >= '${new Date(fromMs).toISOString()}' AND StartTime <= '${new Date(toMs).toISOString()}'`;
    return (await app.client.workflow.count(query)).count;
  };

  it('starts no ingest run from just before the sync fires until the minute is written, then resumes', async () => {
    const leadMs = LEAD_SECONDS * 1000;
    const boundary = await nextScheduledBoundary(app, config, Date.now() + FLOOD_LEAD_MS + leadMs + 2_000);
    const holdFrom = boundary - leadMs - HOLD_BEFORE_FIRE_MS;
    await untilClock(holdFrom - FLOOD_LEAD_MS);
    const queue = await publisher(config.INCOMING_QUEUE);
    await queue.publishMany(
      Array.from({ length: MESSAGES }, () => [JSON.stringify({ id: 1, value: 1 }), {}] as const),
    );
    await queue.close();

    await untilClock(boundary + 1_000);
    const result = await scheduledRunResult(app, config, boundary);
    expect(result.boundary).toBe(new Date(boundary).toISOString());
    expect(result.writeOffsetMs).toBeLessThan(1_000);
    const writtenAt = Date.parse(result.writtenAt!);
    // Visibility has caught up past the window once it shows starts from well after it.
    await waitFor('visibility of the starts after the hold', async () =>
      (await startsBetween(writtenAt + 1_500, writtenAt + 30_000)) > 0 ? true : undefined,
    );

    // Saturated before the hold, nothing started during it, started again right after the write.
    expect(await startsBetween(holdFrom - 2_000, holdFrom)).toBeGreaterThan(0);
    expect(await startsBetween(holdFrom + IN_FLIGHT_SLACK_MS, writtenAt)).toBe(0);
    // Before the hold's own end (1 s after the minute), so only the write can have ended it.
    const ownEnd = boundary + HOLD_AFTER_MINUTE_MS;
    expect(ownEnd - writtenAt).toBeGreaterThan(300);
    expect(await startsBetween(writtenAt, Math.min(writtenAt + 800, ownEnd - 100))).toBeGreaterThan(0);
    expect(await appMetric(app, 'balance_sync_bridge_sync_holds_total')).toBeGreaterThanOrEqual(1);
  }, 150_000);
});
