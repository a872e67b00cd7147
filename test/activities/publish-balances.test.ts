import { MockActivityEnvironment } from '@temporalio/testing';
import { Redis } from 'ioredis';
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { boundaryFor } from '../../src/sync-timing.js';
import {
  createPublishBalances,
  type PublishBalancesInput,
  type PublishBalancesResult,
} from '../../src/activities/publish-balances.js';
import { createMetrics, type AppMetrics } from '../../src/metrics.js';
import { migrate } from '../../src/postgres/schema.js';
import { PRODUCER_FIXTURE, rows } from '../support/harness.js';
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
const warnings: [string, Record<string, unknown> | undefined][] = [];
const quiet = () => undefined;
// No attempt timeouts: the mock's defaults would make every attempt look timed out (not writing).
const env = new MockActivityEnvironment(
  { startToCloseTimeoutMs: 0, scheduleToCloseTimeoutMs: 0 },
  {
    logger: {
      log: quiet,
      trace: quiet,
      debug: quiet,
      info: quiet,
      warn: (message: string, meta?: Record<string, unknown>) => void warnings.push([message, meta]),
      error: quiet,
    },
  },
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
      balance_sync_provider_sums, balance_sync_published_keys CASCADE;
    ${PRODUCER_FIXTURE}`);
  await migrate(db);
  await keydb.flushdb();
  metrics = createMetrics();
  warnings.length = 0;
});

afterEach(() => {
  vi.useRealTimers();
});

const publish = (input: PublishBalancesInput, client: Redis = keydb): Promise<PublishBalancesResult> =>
  env.run(createPublishBalances(db, client, metrics), input);
const now = () => ({ nominalTime: new Date().toISOString(), leadMs: null });
const all = async () => {
  const keys = (await keydb.keys('*')).sort();
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
      writeOffsetMs: null,
      providers: 2,
      keysRemoved: [],
      unpublishable: [],
      readMs: expect.any(Number),
      writeMs: expect.any(Number),
      triggersReinstalled: false,
      alreadyPublished: false,
      boundaryRecorded: false,
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
    const cancellable = new MockActivityEnvironment();
    const running = cancellable.run(createPublishBalances(db, keydb, metrics), {
      nominalTime: new Date(boundary - 5_000).toISOString(),
      leadMs: 5_000,
    });
    cancellable.cancel();
    await expect(running).rejects.toThrow();
    expect(await all()).toEqual({});
  });

  it('writes a run that starts after its boundary at once, up to 50 s late', async () => {
    const boundary = Date.parse('2030-01-01T10:01:00Z');
    const input = { nominalTime: new Date(boundary - 5_000).toISOString(), leadMs: 5_000 };
    vi.useFakeTimers({ toFake: ['Date'], now: boundary + 500 });
    expect((await publish(input)).writeOffsetMs).toBe(500);
    expect(warnings).toEqual([]);
    // As if that write had not happened: a late attempt skips a minute already published.
    await db.query('DELETE FROM balance_sync_sync_state');
    vi.setSystemTime(boundary + 50_000);
    expect((await publish(input)).writeOffsetMs).toBe(50_000);
    expect(warnings).toEqual([
      [
        'balances written late',
        expect.objectContaining({ boundary: '2030-01-01T10:01:00.000Z', writeOffsetMs: 50_000 }),
      ],
    ]);
    vi.setSystemTime(boundary + 50_001);
    await keydb.flushdb();
    await db.query('DELETE FROM balance_sync_sync_state');
    // Past its schedule-to-close deadline (50 s from the tick) an attempt writes nothing: by then the
    // next run owns KeyDB.
    const late = new MockActivityEnvironment({
      scheduledTimestampMs: boundary - 5_000,
      scheduleToCloseTimeoutMs: 50_000,
      startToCloseTimeoutMs: 0,
    });
    await expect(late.run(createPublishBalances(db, keydb, metrics), input)).rejects.toThrow(
      'publishBalances attempt 1 reached its timeout; not writing KeyDB',
    );
    expect(await all()).toEqual({});
  });

  it('fails visibly when KeyDB refuses the write or discards the transaction', async () => {
    const failing = (exec: () => Promise<unknown>) =>
      ({
        ping: () => Promise.resolve('PONG'),
        multi: () => {
          const transaction = { mset: () => transaction, del: () => transaction, exec };
          return transaction;
        },
      }) as unknown as Redis;
    const readonly = new Error('READONLY You can not write against a read only replica');
    await expect(
      publish(
        now(),
        failing(() =>
          Promise.resolve([
            [null, 'OK'],
            [readonly, null],
          ]),
        ),
      ),
    ).rejects.toBe(readonly);
    await expect(
      publish(
        now(),
        failing(() => Promise.resolve(null)),
      ),
    ).rejects.toThrow('KeyDB discarded the MULTI transaction');
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
