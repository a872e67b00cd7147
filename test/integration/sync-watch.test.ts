import { MockActivityEnvironment } from '@temporalio/testing';
import type { Redis } from 'ioredis';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPublishBalances } from '../../src/activities/publish-balances.js';
import { startApp, type App } from '../../src/app.js';
import type { Config } from '../../src/config.js';
import { createKeydbClient } from '../../src/keydb/client.js';
import { createMetrics } from '../../src/metrics.js';
import {
  appReadiness,
  appSample,
  expectedBalances,
  installQuietRuntime,
  keyChangedAt,
  rows,
  stopTestApp,
  testConfig,
  waitFor,
} from '../support/harness.js';
import { isolatedStores, type IsolatedStores } from '../support/isolated-stores.js';

const MINUTE = 60_000;
/** The bound: a stopped or deleted schedule is noticed (and a deleted one back) within this. */
const BOUND_MS = 150_000;
const PAUSE_NOTE = 'maintenance (sync-watch test)';
/** The watch looks this often here (30 s by default). */
const WATCH_INTERVAL_MS = 1_000;
/**
 * The longest one look takes: its Temporal calls share a 10 s deadline (sync-watch.ts), plus the
 * Postgres read. A restore is four describes and two updates; on a loaded CI box that took 6 s.
 */
const LOOK_MS = 11_000;

type LogEntry = { level: number; msg: string; time: number; [key: string]: unknown };

/**
 * The sync watch and readiness of a running app, on stores of its own: the schedule paused, deleted,
 * and a KeyDB that holds its connections but answers nothing (SIGSTOP). The watch looks every second
 * here (30 s by default) and calls the sync stopped after 5 s (2 min): the behaviour, not the wait.
 */
describe('a stopped sync is noticed and heals', () => {
  let stores: IsolatedStores;
  let keydb: Redis;
  let config: Config;
  let app: App;
  const logged: LogEntry[] = [];
  const warnings = (pattern: RegExp, since = 0) =>
    logged.filter((entry) => entry.level === 40 && entry.time >= since && pattern.test(entry.msg));
  /** The first "no minute published" warning since `since` whose causes match `cause`. */
  const staleWarning = (what: string, since: number, cause: RegExp) =>
    waitFor(
      what,
      () => Promise.resolve(warnings(/^no minute published to KeyDB/, since).find((w) => cause.test(w.msg))),
      BOUND_MS,
    );
  /**
   * The next minute boundary whose tick (5 s before it) is still ahead, returned once the minute
   * before it has been written: a run already in its lead window would otherwise write after a
   * sentinel set now.
   */
  const nextBoundary = async () => {
    const boundary = Math.ceil((Date.now() + 6_000) / MINUTE) * MINUTE;
    const previousWritten = boundary - MINUTE + 2_000;
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, previousWritten - Date.now())));
    return boundary;
  };
  const metric = (sample: string) => appSample(app, sample);
  const readiness = () => appReadiness(app);
  const lastPublished = async () =>
    (await rows(stores.db, 'SELECT last_published_boundary AS b FROM balance_sync_sync_state'))[0]?.b as
      Date | undefined;

  beforeAll(async () => {
    stores = await isolatedStores('balance_sync_watch');
    ({ keydb } = stores);
    config = testConfig(stores.overrides);
    installQuietRuntime();
    const log = pino({ level: 'info' }, { write: (line: string) => void logged.push(JSON.parse(line)) });
    app = await startApp(config, log, createMetrics(), {
      health: { intervalMs: 500, timeoutMs: 2_000 },
      syncWatch: {
        intervalMs: WATCH_INTERVAL_MS,
        staleAfterMs: 5_000,
        staleWarnEveryMs: 3_000,
        pausedWarnEveryMs: 4_000,
      },
    });
  });

  afterAll(async () => {
    await stopTestApp(app, config);
    await stores?.stop();
  });

  it(
    'warns within 150 s that the schedule is paused, with its note, again while it stays paused, and leaves it paused',
    async () => {
      const schedule = app.client.schedule.getHandle(config.SYNC_SCHEDULE_ID);
      const pausedAt = Date.now();
      await schedule.pause(PAUSE_NOTE);
      const paused = await waitFor(
        'the paused warning',
        () => Promise.resolve(warnings(/is paused: balances are not published to KeyDB/, pausedAt)[0]),
        BOUND_MS,
      );
      expect(paused).toMatchObject({ scheduleId: config.SYNC_SCHEDULE_ID, note: PAUSE_NOTE });
      expect(paused.time - pausedAt).toBeLessThan(BOUND_MS);
      const stale = await staleWarning(
        'the warning that no minute is published, naming the pause',
        pausedAt,
        /is paused/,
      );
      expect(stale.msg).toContain(`schedule ${config.SYNC_SCHEDULE_ID} is paused (note: ${PAUSE_NOTE})`);
      expect(await metric('balance_sync_sync_schedule_paused')).toBe(1);
      await waitFor(
        'the paused warning repeated',
        () => Promise.resolve(warnings(/is paused: balances/, paused.time + 1).length > 0 ? true : undefined),
        BOUND_MS,
      );
      expect((await schedule.describe()).state).toMatchObject({ paused: true, note: PAUSE_NOTE });
      await schedule.unpause('sync-watch test: done');
      await waitFor('the paused gauge back to 0', async () =>
        (await metric('balance_sync_sync_schedule_paused')) === 0 ? true : undefined,
      );
    },
    2 * BOUND_MS,
  );

  it(
    'restores within the watch interval a schedule edited at runtime, naming each change, and leaves it paused with its note',
    async () => {
      const schedule = app.client.schedule.getHandle(config.SYNC_SCHEDULE_ID);
      const lead = config.SYNC_LEAD_SECONDS;
      await schedule.pause(PAUSE_NOTE);
      const editedAt = Date.now();
      await schedule.update((previous) => ({
        ...previous,
        spec: { cronExpressions: ['*/2 * * * *'] },
        policies: { ...previous.policies, overlap: 'ALLOW_ALL' },
      }));
      const restored = await waitFor(
        'the warning that the schedule was restored',
        () => Promise.resolve(warnings(/was changed at runtime; restored: /, editedAt)[0]),
        BOUND_MS,
      );
      expect(restored.time - editedAt).toBeLessThan(WATCH_INTERVAL_MS + LOOK_MS);
      // The edit's cron fires at second 0: the second differs only with a lead.
      const second = lead === 0 ? [] : [`spec.calendars[0].second 0 → ${60 - lead}`];
      expect(restored.changes).toEqual(
        expect.arrayContaining([
          ...second,
          'spec.calendars[0].minute 0-59/2 → 0-59',
          'policies.overlap "ALLOW_ALL" → "SKIP"',
        ]),
      );
      expect(restored.msg).toContain(
        `schedule ${config.SYNC_SCHEDULE_ID} was changed at runtime; restored: ${[...second, 'spec.calendars[0].minute 0-59/2 → 0-59'].join('; ')};`,
      );
      expect(await metric('balance_sync_sync_schedule_restored_total{schedule="sync"}')).toBe(1);
      const described = await schedule.describe();
      expect(described.state).toMatchObject({ paused: true, note: PAUSE_NOTE });
      expect(described.policies.overlap).toBe('SKIP');
      expect(described.info.nextActionTimes.length).toBeGreaterThanOrEqual(5);
      for (const t of described.info.nextActionTimes) expect((t.getTime() + lead * 1000) % MINUTE).toBe(0);
      // Not written again by the looks after: two later paused warnings (every 4 looks here) are two looks.
      const restoredAt = described.info.lastUpdatedAt;
      for (let look = 1; look <= 2; look++) {
        await waitFor(`later look ${look} (its paused warning)`, () =>
          Promise.resolve(
            warnings(/is paused: balances are not published/).filter((w) => w.time > restored.time).length >=
              look
              ? true
              : undefined,
          ),
        );
        expect((await schedule.describe()).info.lastUpdatedAt).toEqual(restoredAt);
      }
      expect(logged.filter((e) => e.time >= editedAt && /definition stamp renewed/.test(e.msg))).toEqual([]);
      expect(await metric('balance_sync_sync_schedule_stamp_renewed_total{schedule="sync"}')).toBe(0);

      await schedule.unpause('sync-watch test: done');
      await waitFor('a look that finds it unpaused', async () =>
        (await metric('balance_sync_sync_schedule_paused')) === 0 ? true : undefined,
      );
      // One edit, one restore: the looks since found it as defined.
      expect(await metric('balance_sync_sync_schedule_restored_total{schedule="sync"}')).toBe(1);
      expect(warnings(/was changed at runtime/, editedAt)).toHaveLength(1);
    },
    2 * BOUND_MS,
  );

  it(
    're-creates a deleted schedule within 150 s, with a warning, and the schedule itself writes the next minute',
    async () => {
      const schedule = app.client.schedule.getHandle(config.SYNC_SCHEDULE_ID);
      const deletedAt = Date.now();
      await schedule.delete();
      await waitFor(
        'the schedule back',
        async () => ((await schedule.describe()) ? true : undefined),
        BOUND_MS,
      );
      const recreatedIn = Date.now() - deletedAt;
      expect(recreatedIn).toBeLessThan(BOUND_MS);
      expect(warnings(/was missing \(deleted\?\): creating it again/, deletedAt)).toMatchObject([
        { scheduleId: config.SYNC_SCHEDULE_ID },
      ]);
      expect(await metric('balance_sync_sync_schedule_recreated_total{schedule="sync"}')).toBe(1);
      expect((await schedule.describe()).state.paused).toBe(false);
      const boundary = await nextBoundary();
      await stores.db.query(
        'INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (1, 11)',
      );
      await keydb.set('1_Visa', 'before-recreated-minute');
      const changedAt = await keyChangedAt(keydb, '1_Visa', 'before-recreated-minute', boundary + 5_000);
      expect(Math.abs(changedAt - boundary)).toBeLessThan(1_000);
      const expected = await expectedBalances(stores.db);
      expect(await keydb.mget('1_Visa', '2_Mastercard')).toEqual([
        expected['1_Visa'],
        expected['2_Mastercard'],
      ]);
      // Only a scheduled run records its minute (an on-demand run has none): the schedule wrote it.
      await waitFor('the minute recorded', async () =>
        (await lastPublished())?.getTime() === boundary ? true : undefined,
      );
      await waitFor('the last-published gauge', async () =>
        (await metric('balance_sync_sync_last_published_timestamp_seconds')) === boundary / 1000
          ? true
          : undefined,
      );
    },
    2 * BOUND_MS,
  );

  it(
    'says so on /readyz and in the logs while KeyDB holds its connections but answers nothing; the first minute after it answers is exact',
    async () => {
      const pid = Number(/process_id:(\d+)/.exec(await keydb.info('server'))![1]);
      // Stop KeyDB at least 10 s before a minute boundary, so that minute's sync meets it stopped.
      const boundary = Math.ceil((Date.now() + 10_000) / MINUTE) * MINUTE;
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, boundary - 10_000 - Date.now())));
      const stoppedAt = Date.now();
      process.kill(pid, 'SIGSTOP');
      try {
        // The sync's own write fails within the command timeout instead of waiting for KeyDB.
        const client = createKeydbClient(stores.overrides.KEYDB_URL, pino({ level: 'silent' }));
        const attempt = new MockActivityEnvironment({
          startToCloseTimeoutMs: 0,
          scheduleToCloseTimeoutMs: 0,
        });
        const started = Date.now();
        const publishing = attempt.run(createPublishBalances(stores.db, client, createMetrics()), {
          nominalTime: new Date().toISOString(),
          leadMs: null,
        });
        const outcome = await Promise.race([
          publishing.then(
            () => 'written',
            (error: Error) => error.message,
          ),
          new Promise((resolve) => setTimeout(() => resolve('still waiting after 5 s'), 5_000)),
        ]);
        expect(outcome).toBe('Command timed out');
        expect(Date.now() - started).toBeLessThan(3_000);
        client.disconnect();

        const notReady = await waitFor('/readyz 503', async () => {
          const ready = await readiness();
          return ready.status === 503 ? ready : undefined;
        });
        expect(notReady.checks.keydb).toBe(false);
        expect(notReady.reasons).toEqual({
          keydb: 'no reply to PING within 1 s (hung, stopped or overloaded)',
        });
        expect(await metric('balance_sync_dependency_up{dependency="keydb"}')).toBe(0);
        expect(await metric('balance_sync_dependency_up{dependency="postgres"}')).toBe(1);
        expect(warnings(/^not ready: keydb: no reply to PING/, stoppedAt)).toHaveLength(1);

        // Past the minute: the watch names KeyDB as the reason no minute is published.
        const stale = await staleWarning('the warning naming KeyDB', boundary, /keydb not ready/);
        expect(stale.msg).toContain('keydb not ready: no reply to PING within 1 s');
      } finally {
        process.kill(pid, 'SIGCONT');
      }
      const resumedAt = Date.now();
      await waitFor('/readyz 200 again', async () => ((await readiness()).status === 200 ? true : undefined));
      expect(logged.filter((e) => e.time >= resumedAt && e.msg === 'ready again: keydb')).toHaveLength(1);

      // The run of the minute KeyDB missed keeps retrying and writes that minute late once KeyDB
      // answers: before the next minute's run, which would also pass a check of ">= boundary".
      await waitFor(
        `the missed minute ${new Date(boundary).toISOString()} written late`,
        async () => ((await lastPublished())?.getTime() === boundary ? true : undefined),
        boundary + MINUTE - Date.now(),
      );
      const [late] = await rows(
        stores.db,
        'SELECT written_at, attempt FROM balance_sync_publications WHERE boundary = $1',
        [new Date(boundary)],
      );
      expect(late, 'the late minute in the balance history').toBeDefined();
      expect((late!.written_at as Date).getTime()).toBeGreaterThanOrEqual(resumedAt);
      expect(late!.attempt).toBeGreaterThan(1);
      // The first minute after KeyDB answers again, with a row added after it resumed: exact, on time.
      await stores.db.query(
        'INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (2, 7.5)',
      );
      const next = await nextBoundary();
      await keydb.set('2_Mastercard', 'before-first-minute-after');
      const changedAt = await keyChangedAt(keydb, '2_Mastercard', 'before-first-minute-after', next + 5_000);
      expect(Math.abs(changedAt - next)).toBeLessThan(1_000);
      const expected = await expectedBalances(stores.db);
      expect(await keydb.mget('1_Visa', '2_Mastercard')).toEqual([
        expected['1_Visa'],
        expected['2_Mastercard'],
      ]);
      expect(await metric('balance_sync_dependency_up{dependency="keydb"}')).toBe(1);
    },
    4 * MINUTE,
  );
  it(
    'names the failing runs by the error that keeps them failing while KeyDB answers PING but refuses every write',
    async () => {
      // Out of memory with noeviction: PING answers (ready), every write is refused, each run fails. The
      // run ends on its last attempt, which may have met its deadline; the warning names KeyDB's refusal.
      await keydb.config('SET', 'maxmemory-policy', 'noeviction');
      await keydb.config('SET', 'maxmemory', '1');
      const since = Date.now();
      try {
        const stale = await staleWarning('the warning naming the failed run', since, /runs are failing/);
        expect(stale.msg).toMatch(
          new RegExp(
            `runs are failing: the last, ${config.SYNC_SCHEDULE_ID}-\\S+, failed: ReplyError: (OOM|EXECABORT)`,
          ),
        );
        expect((await readiness()).status).toBe(200);
      } finally {
        await keydb.config('SET', 'maxmemory', '0');
      }
    },
    4 * MINUTE,
  );
});
