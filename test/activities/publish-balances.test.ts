import type { Info } from '@temporalio/activity';
import { MockActivityEnvironment } from '@temporalio/testing';
import { Redis } from 'ioredis';
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { ATTEMPT_STOPPED_ERROR, boundaryFor } from '../../src/sync-timing.js';
import {
  createPublishBalances,
  type PublishBalancesInput,
  type PublishBalancesResult,
} from '../../src/activities/publish-balances.js';
import { FENCE_KEY, fencedWriterFor, writeFenced } from '../../src/keydb/fenced-write.js';
import { createMetrics, type AppMetrics } from '../../src/metrics.js';
import { migrate } from '../../src/postgres/schema.js';
import { activityLogger, type LogLine } from '../support/activity-logger.js';
import { PRODUCER_FIXTURE, rows, waitFor } from '../support/harness.js';
import { createScratchDatabase, type ScratchDatabase } from '../support/scratch-database.js';
import { startThrowawayRedis, type ThrowawayService } from '../support/throwaway-services.js';

/**
 * publishBalances on a real Postgres and Redis of its own, through MockActivityEnvironment. The
 * clock is pinned (Date only; timers stay real) to put a run exactly where a test needs it.
 */
let scratch: ScratchDatabase;
let db: pg.Pool;
let redis: ThrowawayService;
let keydb: Redis;
let metrics: AppMetrics;
/** What the activity logged at warn level, message and attributes. */
const warnings: LogLine[] = [];
/**
 * The clock-skew warn lines, apart: most tests pin the worker's clock years away from Postgres's and
 * KeyDB's, which that line rightly names every time.
 */
const clockWarnings: LogLine[] = [];
const warnLines = {
  push: (line: LogLine) =>
    (line[0].startsWith("this worker's clock is off") ? clockWarnings : warnings).push(line),
} as LogLine[];
const logger = activityLogger({ warn: warnLines });
/**
 * An attempt with this info; no attempt timeouts unless given (the mock's would make every attempt look
 * timed out), scheduled now by default (the mock's 1970 stamp would make the worker's clock look off).
 */
const attemptWith = (info: Partial<Info> = {}) =>
  new MockActivityEnvironment(
    {
      startToCloseTimeoutMs: 0,
      scheduleToCloseTimeoutMs: 0,
      currentAttemptScheduledTimestampMs: Date.now(),
      ...info,
    },
    { logger },
  );

beforeAll(async () => {
  [scratch, redis] = await Promise.all([
    createScratchDatabase('balance_sync_publish'),
    startThrowawayRedis(),
  ]);
  db = scratch.pool;
  keydb = new Redis(redis.url);
});

afterAll(async () => {
  keydb?.disconnect();
  await Promise.all([scratch?.drop(), redis?.stop()]);
});

beforeEach(async () => {
  await db.query(`
    DROP TABLE IF EXISTS historical_transactions, initial_data, balance_sync_ingest_ledger,
      balance_sync_provider_sums, balance_sync_published_keys, balance_sync_sync_state,
      balance_sync_publications, balance_sync_balance_changes, balance_sync_balance_current,
      balance_sync_balance_checkpoints, balance_sync_unconfirmed_writes CASCADE;
    ${PRODUCER_FIXTURE}`);
  await migrate(db);
  await keydb.flushdb();
  metrics = createMetrics();
  warnings.length = 0;
  clockWarnings.length = 0;
});

afterEach(() => {
  vi.useRealTimers();
});

const publish = (input: PublishBalancesInput, client: Redis = keydb): Promise<PublishBalancesResult> =>
  attemptWith().run(createPublishBalances(db, client, metrics), input);
const publishIn = (
  attempt: MockActivityEnvironment,
  input: PublishBalancesInput,
  pool: pg.Pool = db,
): Promise<PublishBalancesResult> => attempt.run(createPublishBalances(pool, keydb, metrics), input);
/** The test's pool, with every `pool.query` going through `around(text, run)`. */
const queriesThrough = (around: (text: string, run: () => Promise<unknown>) => Promise<unknown>) =>
  new Proxy(db, {
    get(target, key, receiver) {
      if (key !== 'query') return Reflect.get(target, key, receiver) as unknown;
      const query = (...args: unknown[]) =>
        (target.query as (...a: unknown[]) => Promise<unknown>).apply(target, args);
      return (text: unknown, ...rest: unknown[]) => around(String(text), () => query(text, ...rest));
    },
  });
const BOUNDARY = Date.parse('2030-01-01T10:01:00Z');
/** The scheduled run of BOUNDARY, with a 5 s lead. */
const scheduled = { nominalTime: new Date(BOUNDARY - 5_000).toISOString(), leadMs: 5_000 };
const recordedMinute = async () =>
  (await rows(db, 'SELECT last_published_boundary AS b FROM balance_sync_sync_state')).map((r) =>
    (r.b as Date).toISOString(),
  );
const gauge = async (metric: { get(): Promise<{ values: { value: number }[] }> }) =>
  (await metric.get()).values[0]?.value ?? 0;
const now = () => ({ nominalTime: new Date().toISOString(), leadMs: null });
/** Every balance key and its value (the fence, not a balance, aside). */
const all = async () => {
  const keys = (await keydb.keys('*')).filter((key) => key !== FENCE_KEY).sort();
  return Object.fromEntries(await Promise.all(keys.map(async (k) => [k, await keydb.get(k)])));
};
const published = async () =>
  (await rows(db, 'SELECT key FROM balance_sync_published_keys ORDER BY key')).map((r) => r.key);
const offsetCount = async () =>
  (await metrics.syncWriteOffsetSeconds.get()).values.find((v) => v.metricName?.endsWith('_count'))?.value ??
  0;

describe('publishBalances', () => {
  it('writes every balance as Postgres prints it, at once without a lead', async () => {
    await db.query(
      `INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (1, 0.10), (2, -0.25)`,
    );
    const result = await publish(now());
    expect(await all()).toEqual({ '1_Visa': '1300.1', '2_Mastercard': '1799.75' });
    expect(result).toEqual({
      boundary: null,
      writtenAt: expect.any(String),
      keydbWrittenAt: expect.any(String),
      writeOffsetMs: null,
      providers: 2,
      keysRemoved: [],
      unpublishable: [],
      readMs: expect.any(Number),
      writeMs: expect.any(Number),
      triggersReinstalled: false,
      alreadyPublished: false,
      newerMinuteInKeydb: null,
      boundaryRecorded: false,
      historyRecorded: true,
    });
    expect(Math.abs(Date.parse(result.writtenAt ?? '') - Date.now())).toBeLessThan(5_000);
    for (const ms of [result.readMs, result.writeMs]) {
      expect(ms).toBeGreaterThan(0);
      expect(ms).toBeLessThan(5_000);
      expect(ms).toBe(Math.round(ms * 100) / 100);
    }
    expect(warnings).toEqual([]);
    expect(await offsetCount()).toBe(0);
    expect(await published()).toEqual(['1_Visa', '2_Mastercard']);
  });

  it('deletes the key of a removed provider in the same step and forgets it', async () => {
    await db.query(`INSERT INTO initial_data (provider_name, initial_value) VALUES ('Amex', 5)`);
    await publish(now());
    expect(await all()).toEqual({ '1_Visa': '1300', '2_Mastercard': '1800', '3_Amex': '5' });
    expect(await published()).toEqual(['1_Visa', '2_Mastercard', '3_Amex']);
    await db.query(`DELETE FROM initial_data WHERE id = 3`);
    const result = await publish(now());
    expect(result.keysRemoved).toEqual(['3_Amex']);
    expect(result.providers).toBe(2);
    expect(await all()).toEqual({ '1_Visa': '1300', '2_Mastercard': '1800' });
    expect(await published()).toEqual(['1_Visa', '2_Mastercard']);
    expect((await publish(now())).keysRemoved).toEqual([]);
  });

  it('deletes every key when no provider is left', async () => {
    await publish(now());
    await db.query('DELETE FROM historical_transactions; DELETE FROM initial_data');
    const result = await publish(now());
    expect(result).toMatchObject({ providers: 0, keysRemoved: ['1_Visa', '2_Mastercard'] });
    expect(await all()).toEqual({});
  });

  it('reinstalls missing triggers and recounts before publishing', async () => {
    await db.query('DROP TRIGGER balance_sync_after_insert ON historical_transactions');
    await db.query(`INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (1, 50)`);
    const result = await publish(now());
    expect(result.triggersReinstalled).toBe(true);
    expect(warnings.map(([message]) => message)).toEqual([
      'balance triggers missing on historical_transactions; reinstalling and recounting',
    ]);
    expect(await all()).toEqual({ '1_Visa': '1350', '2_Mastercard': '1800' });
    expect((await publish(now())).triggersReinstalled).toBe(false);
  });

  it('holds a scheduled run until its minute boundary, then reports the offset', async () => {
    const boundary = Date.parse('2030-01-01T10:01:00Z');
    vi.useFakeTimers({ toFake: ['Date'], now: boundary - 300 });
    const started = performance.now();
    const result = await publish({ nominalTime: new Date(boundary - 5_000).toISOString(), leadMs: 5_000 });
    expect(performance.now() - started).toBeGreaterThanOrEqual(290);
    expect(result.boundary).toBe('2030-01-01T10:01:00.000Z');
    // The pinned clock did not move while the run slept: it wrote at boundary - 300 ms.
    expect(result.writeOffsetMs).toBe(-300);
    expect(result.writtenAt).toBe('2030-01-01T10:00:59.700Z');
    expect(await offsetCount()).toBe(1);
    const sum = (await metrics.syncWriteOffsetSeconds.get()).values.find((v) =>
      v.metricName?.endsWith('_sum'),
    );
    expect(sum?.value).toBeCloseTo(-0.3, 6);
    expect(warnings).toEqual([]);
    expect(await all()).toEqual({ '1_Visa': '1300', '2_Mastercard': '1800' });
  });

  it('stops waiting for its boundary when cancelled, writing nothing', async () => {
    const boundary = Date.parse('2030-01-01T10:01:00Z');
    vi.useFakeTimers({ toFake: ['Date'], now: boundary - 30_000 });
    const cancellable = attemptWith();
    const running = cancellable.run(createPublishBalances(db, keydb, metrics), {
      nominalTime: new Date(boundary - 5_000).toISOString(),
      leadMs: 5_000,
    });
    cancellable.cancel();
    // Out of the wait at once (the sleep's abort), not 30 s later at the check before the write.
    await expect(running).rejects.toMatchObject({ name: 'AbortError' });
    expect(await all()).toEqual({});
  });

  it('writes a run that starts after its boundary at once, up to 50 s late', async () => {
    const boundary = Date.parse('2030-01-01T10:01:00Z');
    const input = { nominalTime: new Date(boundary - 5_000).toISOString(), leadMs: 5_000 };
    vi.useFakeTimers({ toFake: ['Date'], now: boundary + 500 });
    expect((await publish(input)).writeOffsetMs).toBe(500);
    expect(warnings).toEqual([]);
    // As if that write had not happened: KeyDB writes a minute once.
    await keydb.flushdb();
    vi.setSystemTime(boundary + 50_000);
    expect((await publish(input)).writeOffsetMs).toBe(50_000);
    expect(warnings).toEqual([
      [
        'balances written late',
        expect.objectContaining({ boundary: '2030-01-01T10:01:00.000Z', writeOffsetMs: 50_000 }),
      ],
    ]);
  });

  it('fails visibly when KeyDB refuses the write (out of memory), and writes nothing', async () => {
    await keydb.config('SET', 'maxmemory-policy', 'noeviction');
    await keydb.config('SET', 'maxmemory', '1');
    try {
      await expect(publish(now())).rejects.toThrow(/^OOM command not allowed/);
    } finally {
      await keydb.config('SET', 'maxmemory', '0');
    }
    expect(await all()).toEqual({});
  });
});

describe('publishBalances writes a minute once', () => {
  it('records its minute after the write, and a retry finds it in KeyDB, writes nothing and says so', async () => {
    vi.useFakeTimers({ toFake: ['Date'], now: BOUNDARY + 100 });
    const first = await publishIn(attemptWith(), scheduled);
    expect(first).toMatchObject({ alreadyPublished: false, boundaryRecorded: true, writeOffsetMs: 100 });
    expect(await recordedMinute()).toEqual(['2030-01-01T10:01:00.000Z']);
    await db.query('INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (1, 5)');
    const retry = await publishIn(attemptWith({ attempt: 2 }), scheduled);
    expect(retry).toEqual({
      boundary: '2030-01-01T10:01:00.000Z',
      writtenAt: null,
      keydbWrittenAt: null,
      writeOffsetMs: null,
      alreadyPublished: true,
      newerMinuteInKeydb: null,
      boundaryRecorded: true,
      historyRecorded: false,
      providers: 0,
      unpublishable: [],
      keysRemoved: [],
      readMs: expect.any(Number),
      writeMs: 0,
      triggersReinstalled: false,
    });
    // The first attempt's values stay: the minute is not rewritten with balances read later.
    expect(await all()).toEqual({ '1_Visa': '1300', '2_Mastercard': '1800' });
    expect(await gauge(metrics.syncRetriesSkipped)).toBe(1);
    expect(warnings).toEqual([
      [
        'retry not writing: this minute was already published by an earlier attempt',
        expect.objectContaining({ boundary: '2030-01-01T10:01:00.000Z', attempt: 2 }),
      ],
    ]);
  });

  it('lets the first of two racing writers through and tells the other, with no warning and no record', async () => {
    vi.useFakeTimers({ toFake: ['Date'], now: BOUNDARY + 20 });
    const racing = { ...scheduled, racing: true };
    const winner = await publishIn(attemptWith({ activityId: '2' }), racing);
    expect(winner).toMatchObject({ alreadyPublished: false, historyRecorded: true, providers: 2 });
    const loser = await publishIn(attemptWith({ activityId: '3' }), racing);
    expect(loser).toMatchObject({ alreadyPublished: true, writtenAt: null, historyRecorded: false });
    expect(await gauge(metrics.syncRetriesSkipped)).toBe(0);
    expect(warnings).toEqual([]);
    expect(await rows(db, 'SELECT boundary FROM balance_sync_publications')).toHaveLength(1);
  });

  it('lets a retry write a minute that no attempt wrote', async () => {
    vi.useFakeTimers({ toFake: ['Date'], now: BOUNDARY + 100 });
    const retry = await publishIn(attemptWith({ attempt: 2 }), scheduled);
    expect(retry).toMatchObject({ alreadyPublished: false, boundaryRecorded: true, providers: 2 });
    expect(await all()).toEqual({ '1_Visa': '1300', '2_Mastercard': '1800' });
    expect(await gauge(metrics.syncRetriesSkipped)).toBe(0);
  });

  it('makes a stalled first attempt that resumes after its retry wrote write nothing, however early', async () => {
    vi.useFakeTimers({ toFake: ['Date'], now: BOUNDARY + 2_000 });
    await publishIn(attemptWith({ attempt: 2 }), scheduled);
    await db.query('INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (1, 5)');
    vi.setSystemTime(BOUNDARY + 1);
    expect(await publishIn(attemptWith(), scheduled)).toMatchObject({ alreadyPublished: true });
    expect(await all()).toEqual({ '1_Visa': '1300', '2_Mastercard': '1800' });
  });

  it('lets the same attempt write its minute again (a write sent twice is the same write)', async () => {
    vi.useFakeTimers({ toFake: ['Date'], now: BOUNDARY + 100 });
    const attempt = attemptWith({ attempt: 3 });
    await publishIn(attempt, scheduled);
    await db.query('INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (1, 5)');
    expect(await publishIn(attempt, scheduled)).toMatchObject({ alreadyPublished: false, providers: 2 });
    expect(await all()).toEqual({ '1_Visa': '1305', '2_Mastercard': '1800' });
  });

  it('lets an on-demand run (no minute) write whatever the record says, and leaves the record', async () => {
    await db.query('INSERT INTO balance_sync_sync_state (last_published_boundary) VALUES ($1)', [
      new Date(BOUNDARY),
    ]);
    expect(await publishIn(attemptWith({ attempt: 2 }), now())).toMatchObject({
      boundary: null,
      alreadyPublished: false,
      boundaryRecorded: false,
    });
    expect(await all()).toEqual({ '1_Visa': '1300', '2_Mastercard': '1800' });
    expect(await recordedMinute()).toEqual(['2030-01-01T10:01:00.000Z']);
  });

  it('reports a minute it wrote but could not record, and keeps the write', async () => {
    vi.useFakeTimers({ toFake: ['Date'], now: BOUNDARY + 100 });
    const down = new Error('connection terminated');
    // pool.query takes its client with connect(callback): only the recording's connect() fails.
    const unreachable = new Proxy(db, {
      get: (target, key, receiver) =>
        key === 'connect'
          ? (...args: Parameters<pg.Pool['connect']>) =>
              args.length > 0 ? target.connect(...args) : Promise.reject(down)
          : (Reflect.get(target, key, receiver) as unknown),
    });
    const result = await publishIn(attemptWith(), scheduled, unreachable);
    expect(result).toMatchObject({
      alreadyPublished: false,
      boundaryRecorded: false,
      historyRecorded: false,
      writeOffsetMs: 100,
    });
    expect(await all()).toEqual({ '1_Visa': '1300', '2_Mastercard': '1800' });
    expect(warnings).toEqual([
      [
        'balances written, but the minute could not be recorded: the history has a gap',
        expect.objectContaining({ boundary: '2030-01-01T10:01:00.000Z', error: 'connection terminated' }),
      ],
    ]);
    expect(await gauge(metrics.balanceHistoryUnrecorded)).toBe(1);
  });
});

describe('publishBalances never writes from an attempt that is over', () => {
  const T = BOUNDARY + 100;
  /**
   * Whether an attempt with this info writes when its read ends `elapsedMs` after it reached the
   * worker (Date and performance.now pinned at T, then moved on during the read).
   */
  const writes = async (info: Partial<Info>, elapsedMs: number) => {
    await keydb.flushdb();
    vi.useFakeTimers({ toFake: ['Date', 'performance'], now: T });
    const slowRead = queriesThrough(async (text, run) => {
      if (text.includes('FROM initial_data')) vi.advanceTimersByTime(elapsedMs);
      return await run();
    });
    try {
      await publishIn(attemptWith(info), now(), slowRead);
      return Object.keys(await all()).length > 0;
    } catch (error) {
      // Its own type: the stale-sync warning looks past it for the error that kept the run failing.
      expect(error).toMatchObject({
        message: 'publishBalances attempt 1 reached its timeout; not writing KeyDB',
        type: ATTEMPT_STOPPED_ERROR,
      });
      expect(await all()).toEqual({});
      return false;
    } finally {
      vi.useRealTimers();
    }
  };

  it('writes until 1.5 s (the KeyDB command timeout plus 0.5 s) before its start-to-close timeout, and not after', async () => {
    const attempt = { startToCloseTimeoutMs: 16_000, currentAttemptScheduledTimestampMs: T };
    expect(await writes(attempt, 14_500)).toBe(true);
    expect(await writes(attempt, 14_501)).toBe(false);
    expect(await writes(attempt, 14_800)).toBe(false);
  });

  // Past schedule-to-close (50 s from the tick) the next run owns KeyDB.
  it('writes until 1.5 s before its schedule-to-close timeout, and not after', async () => {
    const retry = {
      scheduleToCloseTimeoutMs: 50_000,
      scheduledTimestampMs: T - 40_000,
      currentAttemptScheduledTimestampMs: T,
    };
    expect(await writes(retry, 8_500)).toBe(true);
    expect(await writes(retry, 8_501)).toBe(false);
  });

  // The server's stamps are on its clock: only their differences are used, counted from the arrival.
  it("counts its timeout from when it reached the worker, so a worker clock 20 s ahead of Temporal's still writes", async () => {
    const ahead = { startToCloseTimeoutMs: 16_000, currentAttemptScheduledTimestampMs: T - 20_000 };
    expect(await writes(ahead, 0)).toBe(true);
    expect(await writes(ahead, 14_501)).toBe(false);
  });

  it('does not write once cancelled during its read', async () => {
    const attempt = attemptWith();
    const running = publishIn(attempt, now());
    attempt.cancel();
    await expect(running).rejects.toMatchObject({
      message: 'publishBalances attempt 1 was cancelled; not writing KeyDB',
      type: ATTEMPT_STOPPED_ERROR,
    });
    expect(await all()).toEqual({});
  });
});

describe('publishBalances while it waits', () => {
  it('heartbeats from its start, every 300 ms, and stops when it ends', async () => {
    vi.useFakeTimers({ toFake: ['Date', 'setInterval', 'clearInterval'], now: BOUNDARY - 30_000 });
    const attempt = attemptWith();
    let heartbeats = 0;
    attempt.on('heartbeat', () => void heartbeats++);
    const running = publishIn(attempt, scheduled);
    await waitFor('the first heartbeat', () => Promise.resolve(heartbeats === 1 ? true : undefined));
    vi.advanceTimersByTime(299);
    expect(heartbeats).toBe(1);
    vi.advanceTimersByTime(1);
    expect(heartbeats).toBe(2);
    vi.advanceTimersByTime(300);
    expect(heartbeats).toBe(3);
    attempt.cancel(); // ends its 30 s wait
    await expect(running).rejects.toMatchObject({ name: 'AbortError' });
    expect(vi.getTimerCount()).toBe(0);
  });

  // A worker clock 30 s behind Temporal's: its :00 comes after the attempt's deadline.
  it('wakes before a :00 its attempt would not live to see, in time to write (4.5 s before the deadline)', async () => {
    vi.useFakeTimers({ toFake: ['Date'], now: BOUNDARY - 30_000, shouldAdvanceTime: true });
    const started = performance.now();
    const result = await publishIn(attemptWith({ startToCloseTimeoutMs: 6_000 }), scheduled);
    const waitedMs = performance.now() - started;
    expect(waitedMs).toBeGreaterThan(1_400);
    expect(waitedMs).toBeLessThan(3_000);
    expect(result.boundary).toBe(new Date(BOUNDARY).toISOString());
    // Measured on its own clock: about 28.5 s before its :00.
    expect(result.writeOffsetMs).toBeGreaterThan(-29_000);
    expect(result.writeOffsetMs).toBeLessThan(-27_000);
    expect(await all()).toEqual({ '1_Visa': '1300', '2_Mastercard': '1800' });
  });

  it('warms its Postgres and KeyDB connections before the boundary, then reads and writes without a detour', async () => {
    vi.useFakeTimers({ toFake: ['Date'], now: BOUNDARY - 200 });
    const calls: string[] = [];
    const recording = queriesThrough((text, run) => {
      calls.push(`postgres ${text.trim().split('\n')[0]}`);
      return run();
    });
    // The writes' own connection, each command it sends recorded.
    const client = keydb.duplicate();
    const writer = fencedWriterFor(client);
    await writer.ping(); // connected: its hand-shake commands are not the attempt's
    const sendCommand = writer.sendCommand.bind(writer);
    writer.sendCommand = (command, stream) => {
      calls.push(`keydb ${command.name}`);
      return sendCommand(command, stream);
    };
    try {
      await attemptWith().run(createPublishBalances(recording, client, metrics), scheduled);
    } finally {
      client.disconnect();
    }
    expect(calls.slice(0, 2).sort()).toEqual([
      'keydb time',
      'postgres SELECT (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS now_ms',
    ]);
    // Straight from the read to the one fenced write: no check of earlier attempts in Postgres.
    expect(calls.filter((call) => call.startsWith('keydb'))).toEqual(['keydb time', 'keydb evalsha']);
    expect(calls.filter((call) => call.includes('FROM balance_sync_sync_state'))).toEqual([]);
  });
});

describe('the KeyDB fence', () => {
  const NEXT = BOUNDARY + 60_000;
  const scheduledNext = { nominalTime: new Date(NEXT - 5_000).toISOString(), leadMs: 5_000 };
  const fenceMinute = async () => Number(await keydb.hget(FENCE_KEY, 'minute'));
  const refused = async (reason: 'stale' | 'past_deadline') =>
    (await metrics.keydbWritesRefused.get()).values.find((v) => v.labels.reason === reason)?.value;
  const keydbNowMs = async () => {
    const [seconds, micros] = await keydb.time();
    return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
  };

  it('writes a newer minute and moves the fence to it', async () => {
    vi.useFakeTimers({ toFake: ['Date'], now: BOUNDARY + 100 });
    await publishIn(attemptWith(), scheduled);
    expect(await fenceMinute()).toBe(BOUNDARY);
    await db.query('INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (1, 5)');
    vi.setSystemTime(NEXT + 100);
    expect(await publishIn(attemptWith(), scheduledNext)).toMatchObject({ newerMinuteInKeydb: null });
    expect(await fenceMinute()).toBe(NEXT);
    expect(await all()).toEqual({ '1_Visa': '1305', '2_Mastercard': '1800' });
    expect(await refused('stale')).toBe(0);
  });

  it('refuses a minute older than the one KeyDB holds, from any attempt, counts it and names both minutes', async () => {
    vi.useFakeTimers({ toFake: ['Date'], now: NEXT + 100 });
    await publishIn(attemptWith(), scheduledNext);
    await db.query('INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (1, 5)');
    vi.setSystemTime(BOUNDARY + 100);
    for (const attempt of [1, 3]) {
      expect(await publishIn(attemptWith({ attempt }), scheduled)).toMatchObject({
        boundary: new Date(BOUNDARY).toISOString(),
        writtenAt: null,
        alreadyPublished: false,
        newerMinuteInKeydb: new Date(NEXT).toISOString(),
        boundaryRecorded: true,
        historyRecorded: false,
      });
    }
    expect(await all()).toEqual({ '1_Visa': '1300', '2_Mastercard': '1800' });
    expect(await fenceMinute()).toBe(NEXT);
    expect(await recordedMinute()).toEqual([new Date(NEXT).toISOString()]);
    expect(await refused('stale')).toBe(2);
    expect(warnings[0]).toEqual([
      'KeyDB refused a stale write: a newer minute is already there; not applied',
      expect.objectContaining({
        minute: new Date(BOUNDARY).toISOString(),
        newerMinute: new Date(NEXT).toISOString(),
        attempt: 1,
        givenUp: false,
      }),
    ]);
  });

  it('refuses an on-demand write asked for before the minute KeyDB holds, and writes one asked for after', async () => {
    vi.useFakeTimers({ toFake: ['Date'], now: BOUNDARY + 100 });
    await publishIn(attemptWith(), scheduled);
    await db.query('INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (1, 5)');
    const askedBefore = { nominalTime: new Date(BOUNDARY - 1).toISOString(), leadMs: null };
    expect(await publishIn(attemptWith(), askedBefore)).toMatchObject({
      newerMinuteInKeydb: new Date(BOUNDARY).toISOString(),
    });
    expect(await all()).toEqual({ '1_Visa': '1300', '2_Mastercard': '1800' });
    const askedAfter = { nominalTime: new Date(BOUNDARY + 50).toISOString(), leadMs: null };
    expect(await publishIn(attemptWith(), askedAfter)).toMatchObject({ newerMinuteInKeydb: null });
    expect(await all()).toEqual({ '1_Visa': '1305', '2_Mastercard': '1800' });
    // An on-demand write has no minute: the fence still holds the scheduled one.
    expect(await fenceMinute()).toBe(BOUNDARY);
  });

  it("refuses a write that reaches KeyDB after its deadline by KeyDB's own clock, and says how late", async () => {
    const writer = fencedWriterFor(keydb);
    const write = {
      minuteMs: BOUNDARY,
      notBeforeMs: BOUNDARY,
      writer: 'run/test/1',
      set: [{ key: '1_Visa', value: 'late' }],
      del: [],
    };
    const keydbNow = await keydbNowMs();
    expect(await writeFenced(writer, { ...write, deadlineKeydbMs: keydbNow - 1 })).toMatchObject({
      outcome: 'past_deadline',
    });
    expect(await all()).toEqual({});
    expect(await keydb.exists(FENCE_KEY)).toBe(0);
    expect(await writeFenced(writer, { ...write, deadlineKeydbMs: keydbNow + 5_000 })).toMatchObject({
      outcome: 'applied',
    });
    expect(await all()).toEqual({ '1_Visa': 'late' });
  });

  it('never applies a write held past its deadline (KeyDB stopped), and counts it when KeyDB answers', async () => {
    const pid = Number(/process_id:(\d+)/.exec(await keydb.info('server'))![1]);
    // KeyDB stops between the read and the write: the write waits in its socket.
    const stopping = queriesThrough(async (text, run) => {
      const result = await run();
      if (text.includes('balance_sync_provider_sums')) process.kill(pid, 'SIGSTOP');
      return result;
    });
    const started = Date.now();
    const attempt = publishIn(attemptWith(), now(), stopping);
    try {
      await expect(attempt).rejects.toThrow('Command timed out');
      expect(Date.now() - started).toBeLessThan(3_000);
      // The fault lasts a little longer: KeyDB resumes half a second past the write's deadline.
      await new Promise((resolve) => setTimeout(resolve, 500));
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await waitFor('the late answer counted', async () =>
      (await refused('past_deadline')) === 1 ? true : undefined,
    );
    expect(await all()).toEqual({});
    const refusals = warnings.filter(([message]) => message.startsWith('KeyDB'));
    expect(refusals).toEqual([
      [
        'KeyDB refused a write that reached it after its deadline; not applied',
        expect.objectContaining({ minute: 'none (on demand)', attempt: 1, givenUp: true }),
      ],
    ]);
    expect((refusals[0]![1] as { lateMs: number }).lateMs).toBeGreaterThan(0);
  });

  it("writes on time with the worker's clock 10 s behind KeyDB's: the deadline is on KeyDB's clock", async () => {
    vi.useFakeTimers({ toFake: ['Date'], now: (await keydbNowMs()) - 10_000 });
    expect(await publish(now())).toMatchObject({ newerMinuteInKeydb: null, providers: 2 });
    expect(await all()).toEqual({ '1_Visa': '1300', '2_Mastercard': '1800' });
  });
});

describe("publishBalances and its peers' clocks", () => {
  const skews = async () =>
    Object.fromEntries(
      (await metrics.clockSkewSeconds.get()).values.map((v) => [v.labels.peer, Math.round(v.value)]),
    );

  it("exports its clock minus Temporal's, Postgres's and KeyDB's, and names each past 250 ms in a warn line", async () => {
    const realNow = Date.now();
    vi.useFakeTimers({ toFake: ['Date'], now: realNow + 20_000 });
    await publishIn(attemptWith({ currentAttemptScheduledTimestampMs: realNow }), now());
    expect(await skews()).toEqual({ temporal: 20, postgres: 20, keydb: 20 });
    const [line] = clockWarnings;
    expect(line?.[0]).toMatch(/^this worker's clock is off from temporal, postgres, keydb/);
    expect(line?.[1]).toMatchObject({ clockSkew: { temporal: { skewMs: expect.closeTo(20_000, -3) } } });
  });

  it('exports the skew but warns of none within 250 ms', async () => {
    await publishIn(attemptWith({ currentAttemptScheduledTimestampMs: Date.now() }), now());
    expect(await skews()).toMatchObject({
      temporal: 0,
      postgres: expect.closeTo(0),
      keydb: expect.closeTo(0),
    });
    expect(clockWarnings).toEqual([]);
  });
});

describe('publishBalances with NaN or Infinity in the data', () => {
  it('keeps the last good balance of a provider with a NaN row, names it, and publishes it again once the row is gone', async () => {
    await publish(now());
    await db.query(
      `INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (2, 'NaN'), (1, 100)`,
    );
    const held = await publish(now());
    const reason = '1 non-finite transaction_value row(s) in its history';
    expect(held).toMatchObject({
      providers: 1,
      unpublishable: [{ providerId: 2, key: '2_Mastercard', reason }],
      keysRemoved: [],
    });
    expect(await all()).toEqual({ '1_Visa': '1400', '2_Mastercard': '1800' });
    expect(await published()).toEqual(['1_Visa', '2_Mastercard']);
    expect(await gauge(metrics.syncUnpublishableProviders)).toBe(1);
    expect(warnings).toEqual([
      [
        'balances not published for some providers; KeyDB keeps their last good value',
        expect.objectContaining({ unpublishable: [{ providerId: 2, key: '2_Mastercard', reason }] }),
      ],
    ]);
    await db.query(`DELETE FROM historical_transactions WHERE transaction_value = 'NaN'`);
    expect((await publish(now())).unpublishable).toEqual([]);
    expect(await all()).toEqual({ '1_Visa': '1400', '2_Mastercard': '1800' });
    expect(await gauge(metrics.syncUnpublishableProviders)).toBe(0);
  });

  it('keeps the key of a provider whose initial_value turns non-finite, whatever its id', async () => {
    await db.query(`INSERT INTO initial_data (id, provider_name, initial_value) VALUES (12, 'Amex', 5)`);
    await publish(now());
    await db.query(`UPDATE initial_data SET initial_value = 'NaN' WHERE id = 12`);
    const result = await publish(now());
    expect(result.unpublishable).toEqual([
      { providerId: 12, key: '12_Amex', reason: 'initial_value is NaN' },
    ]);
    expect(result.keysRemoved).toEqual([]);
    expect(await all()).toEqual({ '12_Amex': '5', '1_Visa': '1300', '2_Mastercard': '1800' });
  });
});

describe('boundaryFor', () => {
  const at = (iso: string, leadMs: number | null) =>
    boundaryFor(new Date(iso), leadMs)?.toISOString() ?? null;

  it('maps a tick to the minute its lead points at', () => {
    expect(at('2026-01-01T10:00:55Z', 5000)).toBe('2026-01-01T10:01:00.000Z');
    expect(at('2026-01-01T10:00:57Z', 3000)).toBe('2026-01-01T10:01:00.000Z');
    expect(at('2026-01-01T10:01:00Z', 0)).toBe('2026-01-01T10:01:00.000Z');
  });

  it('tolerates a start up to a second either side of the tick, not more', () => {
    expect(at('2026-01-01T10:00:56Z', 5000)).toBe('2026-01-01T10:01:00.000Z');
    expect(at('2026-01-01T10:00:54Z', 5000)).toBe('2026-01-01T10:01:00.000Z');
    expect(at('2026-01-01T10:00:56.001Z', 5000)).toBeNull();
    expect(at('2026-01-01T10:00:53.999Z', 5000)).toBeNull();
  });

  it('gives no boundary for an off-minute run or without a lead', () => {
    expect(at('2026-01-01T10:00:31Z', 5000)).toBeNull();
    expect(at('2026-01-01T10:00:55Z', null)).toBeNull();
    expect(at('2026-01-01T10:01:00Z', null)).toBeNull();
  });
});
