import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApp, type App } from '../../src/app.js';
import type { Config } from '../../src/config.js';
import { HOLD_BEFORE_FIRE_MS } from '../../src/sync-hold.js';
import {
  appMetric,
  ingestStartsBetween,
  installQuietRuntime,
  nextScheduledBoundary,
  publisher,
  scheduledRunResult,
  silentLog,
  stopTestApp,
  testConfig,
  untilClock,
  waitFor,
} from '../support/harness.js';
import { isolatedStores, type IsolatedStores } from '../support/isolated-stores.js';

const LEAD_SECONDS = 2;
const QUEUED = 30;

/**
 * The hold when the throttle never closes (BRIDGE_MAX_IN_FLIGHT 0), as in a drain at the defaults
 * where every start is eager and the CPU runs out before 100 runs are open: the messages waiting in
 * the queue are what say ingest is saturated. Without burning the CPU: the one delivery the bridge
 * takes (BRIDGE_PREFETCH 1) waits on a provider look-up held by a table lock, so the rest wait
 * in RabbitMQ; the lock is let go inside the minute's hold window. Waits for one real boundary.
 */
describe('the sync hold, seen from the queue (throttle off)', () => {
  let stores: IsolatedStores;
  let config: Config;
  let app: App;

  beforeAll(async () => {
    stores = await isolatedStores('balance_sync_hold_backlog');
    config = testConfig({
      ...stores.overrides,
      SYNC_LEAD_SECONDS: String(LEAD_SECONDS),
      BRIDGE_MAX_IN_FLIGHT: '0',
      BRIDGE_PREFETCH: '1',
    });
    installQuietRuntime();
    app = await startApp(config, silentLog());
  });

  afterAll(async () => {
    await stopTestApp(app, config);
    await stores?.stop();
  });

  const startsBetween = (fromMs: number, toMs: number) => ingestStartsBetween(app, config, fromMs, toMs);

  it('holds new starts from just before the sync fires until the minute is written, with messages waiting', async () => {
    const leadMs = LEAD_SECONDS * 1000;
    const boundary = await nextScheduledBoundary(app, config, Date.now() + 20_000);
    const holdFrom = boundary - leadMs - HOLD_BEFORE_FIRE_MS;
    const holds = await appMetric(app, 'balance_sync_bridge_sync_holds_total');
    await untilClock(holdFrom - 15_000);

    const locker = await stores.db.connect();
    try {
      // A provider the app has not looked up: its message reloads the provider list, which waits on the lock.
      await locker.query('BEGIN; LOCK TABLE initial_data IN ACCESS EXCLUSIVE MODE');
      const { rows: inserted } = await locker.query<{ id: number }>(
        `INSERT INTO initial_data (provider_name, initial_value) VALUES ('Held', 0) RETURNING id`,
      );
      const held = inserted[0]!;
      const producer = await publisher(config.INCOMING_QUEUE);
      await producer.publishMany([
        [`{"id": ${held.id}, "value": 1}`, {}],
        ...Array.from({ length: QUEUED }, () => [`{"id": 1, "value": 1}`, {}] as const),
      ]);
      await producer.close();
      await untilClock(holdFrom + 300);
      await locker.query('COMMIT');
    } finally {
      locker.release();
    }

    await untilClock(boundary + 1_000);
    const result = await scheduledRunResult(app, config, boundary);
    expect(result.writeOffsetMs).toBeLessThan(1_000);
    const writtenAt = Date.parse(result.writtenAt!);
    await waitFor('every message started', async () =>
      (await startsBetween(holdFrom - 20_000, writtenAt + 60_000)) === QUEUED + 1 ? true : undefined,
    );
    expect(await appMetric(app, 'balance_sync_bridge_sync_holds_total')).toBe(holds + 1);
    // The held look-up's own start may land in the window (it passed the gate before); no other did.
    expect(await startsBetween(holdFrom, writtenAt)).toBeLessThanOrEqual(1);
    expect(await startsBetween(writtenAt, writtenAt + 60_000)).toBeGreaterThanOrEqual(QUEUED - 1);
  }, 150_000);
});
