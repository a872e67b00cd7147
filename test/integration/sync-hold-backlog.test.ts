import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApp, type App } from '../../src/app.js';
import type { Config } from '../../src/config.js';
import { HOLD_AGAIN_BEFORE_MINUTE_MS, HOLD_BEFORE_FIRE_MS } from '../../src/sync-hold.js';
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

/**
 * The hold when the throttle never closes (BRIDGE_MAX_IN_FLIGHT 0), as in a drain at the defaults
 * where every start is eager and the CPU runs out before 100 runs are open: the messages waiting in
 * the queue are what say ingest is saturated. Without burning the CPU: the one delivery the bridge
 * takes (BRIDGE_PREFETCH 1) waits on a provider look-up held by a table lock, so the rest wait
 * in RabbitMQ; the lock is let go inside the minute's hold window. With one delivery in the bridge,
 * at most one start can be past the gate when the hold begins or resumes. Each waits for one real
 * boundary.
 */
function withBackedUpApp(name: string, leadSeconds: number) {
  const context = {} as { stores: IsolatedStores; config: Config; app: App };

  beforeAll(async () => {
    context.stores = await isolatedStores(name);
    context.config = testConfig({
      ...context.stores.overrides,
      SYNC_LEAD_SECONDS: String(leadSeconds),
      BRIDGE_MAX_IN_FLIGHT: '0',
      BRIDGE_PREFETCH: '1',
    });
    installQuietRuntime();
    context.app = await startApp(context.config, silentLog());
  });

  afterAll(async () => {
    await stopTestApp(context.app, context.config);
    await context.stores?.stop();
  });

  /** The minute's hold window opens at `holdFrom`: `queued` messages wait behind a held look-up, let go 300 ms into it. */
  const backUpUntil = async (holdFrom: number, queued: number) => {
    const { stores, config } = context;
    await untilClock(holdFrom - 15_000);
    const locker = await stores.db.connect();
    try {
      // A provider the app has not looked up: its message reloads the provider list, which waits on the lock.
      await locker.query('BEGIN; LOCK TABLE initial_data IN ACCESS EXCLUSIVE MODE');
      const { rows: inserted } = await locker.query<{ id: number }>(
        `INSERT INTO initial_data (provider_name, initial_value) VALUES ('Held', 0) RETURNING id`,
      );
      const producer = await publisher(config.INCOMING_QUEUE);
      await producer.publishMany([
        [`{"id": ${inserted[0]!.id}, "value": 1}`, {}],
        ...Array.from({ length: queued }, () => [`{"id": 1, "value": 1}`, {}] as const),
      ]);
      await producer.close();
      await untilClock(holdFrom + 300);
      await locker.query('COMMIT');
    } finally {
      locker.release();
    }
  };

  /**
   * Backs the queue up into the next minute's hold window and waits for the minute's write: when the
   * window opened, the holds counted before, and when the minute was written (within 1 s of it).
   */
  const backedUpMinute = async (queued: number) => {
    const { app, config } = context;
    const boundary = await nextScheduledBoundary(app, config, Date.now() + 20_000);
    const holdFrom = boundary - leadSeconds * 1000 - HOLD_BEFORE_FIRE_MS;
    const holdsBefore = await appMetric(app, 'balance_sync_bridge_sync_holds_total');
    await backUpUntil(holdFrom, queued);
    await untilClock(boundary + 1_000);
    const result = await scheduledRunResult(app, config, boundary);
    expect(result.writeOffsetMs).toBeLessThan(1_000);
    return { boundary, holdFrom, holdsBefore, writtenAt: Date.parse(result.writtenAt!) };
  };

  const startsBetween = (fromMs: number, toMs: number) =>
    ingestStartsBetween(context.app, context.config, fromMs, toMs);
  return { context, backedUpMinute, startsBetween };
}

describe('the sync hold, seen from the queue (throttle off)', () => {
  const LEAD_SECONDS = 2;
  const QUEUED = 30;
  const { context, backedUpMinute, startsBetween } = withBackedUpApp(
    'balance_sync_hold_backlog',
    LEAD_SECONDS,
  );

  it('holds new starts from just before the sync fires until the minute is written, with messages waiting', async () => {
    const { holdFrom, holdsBefore: holds, writtenAt } = await backedUpMinute(QUEUED);
    await waitFor('every message started', async () =>
      (await startsBetween(holdFrom - 20_000, writtenAt + 60_000)) === QUEUED + 1 ? true : undefined,
    );
    expect(await appMetric(context.app, 'balance_sync_bridge_sync_holds_total')).toBe(holds + 1);
    // The held look-up's own start may land in the window (it passed the gate before); no other did.
    // (With a 2 s lead the attempt is ready less than MIN_PAUSE_MS before the last second: no pause.)
    expect(await startsBetween(holdFrom, writtenAt)).toBeLessThanOrEqual(1);
    expect(await startsBetween(writtenAt, writtenAt + 60_000)).toBeGreaterThanOrEqual(QUEUED - 1);
  }, 150_000);
});

describe('the sync hold pauses while the attempt waits for the minute', () => {
  /** The default lead: the attempt is ready about 5 s before the minute, so the hold pauses for ~4 s. */
  const LEAD_SECONDS = 5;
  /** More than the bridge starts in the pause, one at a time, so the queue never empties before the minute. */
  const QUEUED = 900;
  const { context, backedUpMinute, startsBetween } = withBackedUpApp('balance_sync_hold_pause', LEAD_SECONDS);

  /** When the minute's publishBalances attempt started, by the server's clock (it is ready just after). */
  const attemptStartedAt = async (boundary: number) => {
    const { app, config } = context;
    const description = await app.client.schedule.getHandle(config.SYNC_SCHEDULE_ID).describe();
    const action = description.info.recentActions.find(
      (a) => a.scheduledAt.getTime() === boundary - LEAD_SECONDS * 1000,
    );
    const history = await app.client.workflow.getHandle(action!.action.workflow.workflowId).fetchHistory();
    const started = history.events?.find((event) => event.activityTaskStartedEventAttributes);
    const seconds = started?.eventTime?.seconds;
    return Number(seconds ?? 0) * 1000 + Math.floor((started?.eventTime?.nanos ?? 0) / 1e6);
  };

  it('starts runs again between the attempt being ready and 1 s before the minute, none after until the write', async () => {
    const { boundary, holdFrom, holdsBefore: holds, writtenAt } = await backedUpMinute(QUEUED);
    const holdAgainAt = boundary - HOLD_AGAIN_BEFORE_MINUTE_MS;
    const readyFrom = await attemptStartedAt(boundary);
    await untilClock(writtenAt + 6_000);

    const counts = {
      held: await startsBetween(holdFrom, readyFrom),
      paused: await startsBetween(readyFrom, holdAgainAt),
      heldAgain: await startsBetween(holdAgainAt, writtenAt),
      after: await startsBetween(writtenAt, writtenAt + 5_000),
    };
    const seen = `attempt started ${readyFrom - boundary} ms, written ${writtenAt - boundary} ms from the minute; starts ${JSON.stringify(counts)}`;
    expect(await appMetric(context.app, 'balance_sync_bridge_sync_holds_total'), seen).toBe(holds + 1);
    // The held look-up's own start may land in either held part (it passed the gate before); no other did.
    expect(counts.held, seen).toBeLessThanOrEqual(1);
    expect(counts.paused, seen).toBeGreaterThan(0);
    expect(counts.heldAgain, seen).toBeLessThanOrEqual(1);
    // The queue still had messages at the minute: the hold, not an empty queue, kept the last second free.
    expect(counts.after, seen).toBeGreaterThan(0);
  }, 150_000);
});
