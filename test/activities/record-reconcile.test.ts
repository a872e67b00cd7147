import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  createReconcileBalances,
  type ReconcileBalancesResult,
} from '../../src/activities/reconcile-balances.js';
import {
  createRecordTransaction,
  type RecordTransactionInput,
  type RecordTransactionResult,
} from '../../src/activities/record-transaction.js';
import { IngestOutages } from '../../src/ingest-outages.js';
import { createMetrics, type AppMetrics } from '../../src/metrics.js';
import { BALANCE_LOCK_KEY, migrate } from '../../src/postgres/schema.js';
import { activityLogger, type LogLine } from '../support/activity-logger.js';
import { PRODUCER_FIXTURE, rows, waitFor } from '../support/harness.js';
import { createScratchDatabase, type ScratchDatabase } from '../support/scratch-database.js';

/**
 * recordTransaction and reconcileBalances on a real Postgres of their own, through
 * MockActivityEnvironment: fast enough to judge every mutant of these files (npm run test:mutation).
 */
let scratch: ScratchDatabase;
let db: pg.Pool;
let metrics: AppMetrics;
const warnings: LogLine[] = [];
const env = new MockActivityEnvironment(undefined, { logger: activityLogger({ warn: warnings }) });

beforeAll(async () => {
  scratch = await createScratchDatabase('balance_sync_activities');
  db = scratch.pool;
});

afterAll(async () => {
  await scratch?.drop();
});

beforeEach(async () => {
  await db.query(`
    DROP TABLE IF EXISTS historical_transactions, initial_data, balance_sync_ingest_ledger,
      balance_sync_provider_sums, balance_sync_published_keys CASCADE;
    ${PRODUCER_FIXTURE}`);
  await migrate(db);
  metrics = createMetrics();
  warnings.length = 0;
});

const histogramCount = async (histogram: {
  get(): Promise<{ values: { metricName?: string; value: number }[] }>;
}) => (await histogram.get()).values.find((v) => v.metricName?.endsWith('_count'))?.value ?? 0;
const valueOf = async (metric: { get(): Promise<{ values: { value: number }[] }> }) =>
  (await metric.get()).values[0]?.value ?? 0;

/** Writes a row with the balance triggers disabled, so the running sum misses it. */
async function insertBypassingTriggers(providerId: number, value: string) {
  const client = await db.connect();
  try {
    await client.query('BEGIN');
    await client.query('ALTER TABLE historical_transactions DISABLE TRIGGER balance_sync_after_insert');
    await client.query(
      'INSERT INTO historical_transactions (provider_id, transaction_value) VALUES ($1, $2)',
      [providerId, value],
    );
    await client.query('ALTER TABLE historical_transactions ENABLE TRIGGER balance_sync_after_insert');
    await client.query('COMMIT');
  } finally {
    client.release();
  }
}

describe('recordTransaction', () => {
  const record = (input: RecordTransactionInput, pool: pg.Pool = db): Promise<RecordTransactionResult> =>
    env.run(createRecordTransaction(pool, metrics), input);

  it('inserts the exact value once per ingest key and reports a repeat as not inserted', async () => {
    const first = await record({ ingestKey: 'k-1', providerId: 2, value: '12.340' });
    expect(first).toEqual({ transactionId: expect.any(Number), inserted: true });
    const again = await record({ ingestKey: 'k-1', providerId: 2, value: '12.340' });
    expect(again).toEqual({ transactionId: first.transactionId, inserted: false });
    expect(
      await rows(
        db,
        'SELECT provider_id, transaction_value::text AS v FROM historical_transactions WHERE id = $1',
        [first.transactionId],
      ),
    ).toEqual([{ provider_id: 2, v: '12.340' }]);
    expect(await rows(db, 'SELECT ingest_key, transaction_id FROM balance_sync_ingest_ledger')).toEqual([
      { ingest_key: 'k-1', transaction_id: first.transactionId },
    ]);
    const other = await record({ ingestKey: 'k-2', providerId: 1, value: '-1' });
    expect(other.inserted).toBe(true);
    expect(other.transactionId).not.toBe(first.transactionId);
  });

  it('writes exactly one row when the same key is recorded concurrently', async () => {
    const results = await Promise.all(
      Array.from({ length: 6 }, () => record({ ingestKey: 'race', providerId: 1, value: '5' })),
    );
    expect(results.filter((r) => r.inserted)).toHaveLength(1);
    expect(new Set(results.map((r) => r.transactionId)).size).toBe(1);
    expect(
      await rows(db, `SELECT count(*)::int AS n FROM historical_transactions WHERE transaction_value = 5`),
    ).toEqual([{ n: 1 }]);
  });

  it("returns the winner's row when a concurrent duplicate commits first (unique violation path)", async () => {
    const other = await db.connect();
    try {
      await other.query('BEGIN');
      const { rows: inserted } = await other.query<{ id: number }>(
        `INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (1, 77) RETURNING id`,
      );
      await other.query(
        `INSERT INTO balance_sync_ingest_ledger (ingest_key, transaction_id) VALUES ('dup', $1)`,
        [inserted[0]!.id],
      );
      // This one does not see the uncommitted entry, inserts its row, then waits on the ledger key.
      const recording = record({ ingestKey: 'dup', providerId: 1, value: '77' });
      await waitFor('the second insert to wait on the ledger key', async () =>
        (
          await rows(
            db,
            `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`,
          )
        ).length > 0
          ? true
          : undefined,
      );
      await other.query('COMMIT');
      expect(await recording).toEqual({ transactionId: inserted[0]!.id, inserted: false });
    } finally {
      other.release();
    }
    expect(
      await rows(db, `SELECT count(*)::int AS n FROM historical_transactions WHERE transaction_value = 77`),
    ).toEqual([{ n: 1 }]);
  });

  it('observes end-to-end latency only for a new row with a receive time', async () => {
    await record({ ingestKey: 'm-1', providerId: 1, value: '1', receivedAtMs: Date.now() - 2_000 });
    expect(await histogramCount(metrics.ingestEndToEndSeconds)).toBe(1);
    const sum = (await metrics.ingestEndToEndSeconds.get()).values.find((v) =>
      v.metricName?.endsWith('_sum'),
    )!.value;
    expect(sum).toBeGreaterThanOrEqual(2);
    expect(sum).toBeLessThan(60);
    await record({ ingestKey: 'm-1', providerId: 1, value: '1', receivedAtMs: Date.now() });
    await record({ ingestKey: 'm-2', providerId: 1, value: '1' });
    expect(await histogramCount(metrics.ingestEndToEndSeconds)).toBe(1);
  });

  it('fails an unknown provider at once, as UnknownProvider, writing nothing', async () => {
    const failure = await record({ ingestKey: 'u', providerId: 999, value: '1' }).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(ApplicationFailure);
    expect(failure).toMatchObject({ type: 'UnknownProvider', nonRetryable: true });
    expect((failure as Error).message).toBe('provider 999 does not exist in initial_data');
    expect(await rows(db, 'SELECT * FROM balance_sync_ingest_ledger')).toEqual([]);
  });

  it('fails a value Postgres rejects at once, as InvalidTransaction', async () => {
    const failure = await record({ ingestKey: 'v', providerId: 1, value: 'twelve' }).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(ApplicationFailure);
    expect(failure).toMatchObject({ type: 'InvalidTransaction', nonRetryable: true });
    expect((failure as Error).message).toMatch(/^Postgres rejected value twelve: invalid input syntax/);
  });

  it('lets any other Postgres error through as retryable', async () => {
    const down = Object.assign(new Error('terminating connection'), { code: '57P01' });
    // The insert fails; a ledger lookup would have found an entry, but must not be made.
    let calls = 0;
    const failing = {
      query: () =>
        ++calls === 1
          ? Promise.reject(down)
          : Promise.resolve({ rows: [{ transaction_id: 1, body_sha256: null }] }),
    } as unknown as pg.Pool;
    await expect(record({ ingestKey: 'x', providerId: 1, value: '1' }, failing)).rejects.toBe(down);
    const noCode = new Error('socket hang up');
    const failingWithoutCode = { query: () => Promise.reject(noCode) } as unknown as pg.Pool;
    await expect(record({ ingestKey: 'x', providerId: 1, value: '1' }, failingWithoutCode)).rejects.toBe(
      noCode,
    );
  });

  it('fails a row a CHECK constraint refuses at once, as RefusedByDatabase naming SQLSTATE and constraint', async () => {
    await db.query(
      'ALTER TABLE historical_transactions ADD CONSTRAINT nonzero CHECK (transaction_value <> 0)',
    );
    const failure = await record({ ingestKey: 'c', providerId: 1, value: '0' }).catch((e: unknown) => e);
    expect(failure).toMatchObject({ type: 'RefusedByDatabase', nonRetryable: true });
    expect((failure as Error).message).toBe(
      'Postgres refused the row: new row for relation "historical_transactions" violates check constraint "nonzero" (SQLSTATE 23514, constraint nonzero)',
    );
  });

  it('shows an outage (gauge, retries by SQLSTATE class, one warning) until the next insert succeeds', async () => {
    const denied = Object.assign(new Error('permission denied for table historical_transactions'), {
      code: '42501',
    });
    const outages = new IngestOutages(metrics);
    const recordTransaction = createRecordTransaction(db, metrics, outages);
    const refusing = createRecordTransaction(
      { query: () => Promise.reject(denied) } as unknown as pg.Pool,
      metrics,
      outages,
    );
    for (const key of ['o-1', 'o-2'])
      await expect(env.run(refusing, { ingestKey: key, providerId: 1, value: '1' })).rejects.toBe(denied);
    expect(await valueOf(metrics.ingestOutage)).toBe(1);
    expect((await metrics.ingestInsertRetries.get()).values).toEqual([
      expect.objectContaining({ labels: { sqlstate_class: '42' }, value: 2 }),
    ]);
    // One warning for the outage however many inserts meet it (the SDK adds its own `Activity failed`).
    expect(warnings.filter(([message]) => message !== 'Activity failed').map(([message]) => message)).toEqual(
      ['Postgres cannot take inserts now; retrying while it lasts'],
    );
    await env.run(recordTransaction, { ingestKey: 'o-3', providerId: 1, value: '1' });
    expect(await valueOf(metrics.ingestOutage)).toBe(0);
    expect(outages.reasons()).toEqual({});
  });

  it('gives up on an error that is neither refusal nor outage at the fifth attempt, as InsertFailed', async () => {
    const bug = Object.assign(new Error('syntax error at or near "INSRT"'), { code: '42601' });
    const failing = createRecordTransaction(
      { query: () => Promise.reject(bug) } as unknown as pg.Pool,
      metrics,
    );
    const input = { ingestKey: 'b', providerId: 1, value: '1' };
    await expect(new MockActivityEnvironment({ attempt: 4 }).run(failing, input)).rejects.toBe(bug);
    await expect(new MockActivityEnvironment({ attempt: 5 }).run(failing, input)).rejects.toMatchObject({
      type: 'InsertFailed',
      nonRetryable: true,
      message: 'insert failed 5 times: syntax error at or near "INSRT" (SQLSTATE 42601)',
    });
    const down = Object.assign(new Error('terminating connection'), { code: '57P01' });
    const outage = createRecordTransaction(
      { query: () => Promise.reject(down) } as unknown as pg.Pool,
      metrics,
    );
    await expect(new MockActivityEnvironment({ attempt: 50 }).run(outage, input)).rejects.toBe(down);
  });

  it('warns when an insert is still retrying two minutes after its message arrived', async () => {
    const slow = new MockActivityEnvironment({ attempt: 7 }, { logger: activityLogger({ warn: warnings }) });
    const recordTransaction = createRecordTransaction(db, metrics);
    await slow.run(recordTransaction, {
      ingestKey: 's-1',
      providerId: 1,
      value: '1',
      receivedAtMs: Date.now() - 60_000,
    });
    expect(warnings).toEqual([]);
    await slow.run(recordTransaction, {
      ingestKey: 's-2',
      providerId: 1,
      value: '1',
      receivedAtMs: Date.now() - 121_000,
    });
    expect(warnings.map(([message]) => message)).toEqual([
      'insert still retrying; the run stays open until Postgres takes it',
    ]);
  });

  it('keeps the body fingerprint, counts outcomes, and refuses the same key with a different body', async () => {
    const first = await record({ ingestKey: 'm-x', providerId: 1, value: '3', bodySha256: 'aa' });
    expect(await rows(db, 'SELECT ingest_key, body_sha256 FROM balance_sync_ingest_ledger')).toEqual([
      { ingest_key: 'm-x', body_sha256: 'aa' },
    ]);
    // The same body, or a repeat that carries no fingerprint: a duplicate.
    expect(await record({ ingestKey: 'm-x', providerId: 1, value: '3', bodySha256: 'aa' })).toEqual({
      transactionId: first.transactionId,
      inserted: false,
    });
    expect((await record({ ingestKey: 'm-x', providerId: 1, value: '3' })).inserted).toBe(false);
    const failure = await record({ ingestKey: 'm-x', providerId: 1, value: '4', bodySha256: 'bb' }).catch(
      (e: unknown) => e,
    );
    expect(failure).toBeInstanceOf(ApplicationFailure);
    expect(failure).toMatchObject({
      type: 'MessageIdConflict',
      nonRetryable: true,
      message: `m-x was already recorded (transaction ${first.transactionId}) from a different body`,
    });
    // An entry from before fingerprints were kept matches any body.
    await record({ ingestKey: 'm-old', providerId: 1, value: '5' });
    expect((await record({ ingestKey: 'm-old', providerId: 1, value: '5', bodySha256: 'cc' })).inserted).toBe(
      false,
    );
    const outcomes = (await metrics.transactionsRecorded.get()).values.map((v) => [
      v.labels.outcome,
      v.value,
    ]);
    expect(Object.fromEntries(outcomes)).toEqual({ inserted: 2, duplicate: 3 });
  });

  it('retries a duplicate of its own id after a restore set the sequence back, as an outage naming the sequence and its fix', async () => {
    await db.query(`SELECT setval(pg_get_serial_sequence('historical_transactions', 'id'), 1)`);
    const outages = new IngestOutages(metrics);
    const recordTransaction = createRecordTransaction(db, metrics, outages);
    const input = { ingestKey: 'seq-1', providerId: 1, value: '8.5' };
    const failure = await env.run(recordTransaction, input).catch((e: unknown) => e);
    // Retryable (not an ApplicationFailure the workflow would dead-letter), and says what to run.
    expect(failure).not.toBeInstanceOf(ApplicationFailure);
    const fix = /fix: (SELECT setval\(.*\))$/.exec((failure as Error).message)?.[1];
    expect((failure as Error).message).toMatch(
      /^sequence public\.historical_transactions_id_seq is behind historical_transactions\.id .*historical_transactions_pkey/,
    );
    expect(fix).toBe(
      "SELECT setval('public.historical_transactions_id_seq', (SELECT max(id) FROM historical_transactions))",
    );
    expect(outages.reasons().postgres).toBe((failure as Error).message);
    expect(await valueOf(metrics.ingestOutage)).toBe(1);
    expect(warnings.filter(([message]) => message !== 'Activity failed').map(([message]) => message)).toEqual(
      ['Postgres cannot take inserts now; retrying while it lasts'],
    );
    await db.query(fix!);
    expect(await env.run(recordTransaction, input)).toMatchObject({ inserted: true });
    expect(outages.reasons()).toEqual({});
    expect(
      await rows(db, `SELECT count(*)::int AS n FROM historical_transactions WHERE transaction_value = 8.5`),
    ).toEqual([{ n: 1 }]);
  });

  it('still refuses a duplicate on a unique index an operator added, as RefusedByDatabase', async () => {
    await db.query('CREATE UNIQUE INDEX one_row_per_value ON historical_transactions (transaction_value)');
    const failure = await record({ ingestKey: 'dup-value', providerId: 2, value: '100' }).catch(
      (e: unknown) => e,
    );
    expect(failure).toMatchObject({ type: 'RefusedByDatabase', nonRetryable: true });
    expect((failure as Error).message).toBe(
      'Postgres refused the row: duplicate key value violates unique constraint "one_row_per_value" (SQLSTATE 23505, constraint one_row_per_value)',
    );
  });

  it('says so when neither a new row nor a ledger entry comes back', async () => {
    const empty = { query: () => Promise.resolve({ rows: [] }) } as unknown as pg.Pool;
    await expect(record({ ingestKey: 'gone', providerId: 1, value: '1' }, empty)).rejects.toThrow(
      'ledger entry for gone vanished',
    );
  });
});

describe('reconcileBalances', () => {
  const reconcile = (): Promise<ReconcileBalancesResult> => env.run(createReconcileBalances(db, metrics));
  const sums = async () =>
    await rows(db, 'SELECT provider_id, tx_sum::text AS s FROM balance_sync_provider_sums ORDER BY 1');

  /**
   * Whether the balance lock is free and no session sits in an open transaction, asked from a session
   * of its own: a pooled session could take the lock again (it is re-entrant) or be the one left open.
   */
  async function leftBehind() {
    const probe = new pg.Client({ connectionString: scratch.url });
    await probe.connect();
    try {
      const {
        rows: [lock],
      } = await probe.query<{ got: boolean }>('SELECT pg_try_advisory_lock($1) AS got', [BALANCE_LOCK_KEY]);
      const { rows: open } = await probe.query(
        `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'`,
      );
      return { lockFree: lock?.got === true, openTransactions: open.length };
    } finally {
      await probe.end(); // releases the probe's own lock
    }
  }

  it('changes nothing when the running sums match', async () => {
    const before = await sums();
    const result = await reconcile();
    expect(result).toEqual({ providersChecked: 2, corrections: [], durationMs: expect.any(Number) });
    expect(result.durationMs).toBeGreaterThanOrEqual(0);
    expect(result.durationMs).toBeLessThan(60_000);
    expect(warnings).toEqual([]);
    expect(await sums()).toEqual(before);
    expect(await valueOf(metrics.reconcileDrift)).toBe(0);
    expect(await valueOf(metrics.reconcileDriftTotal)).toBe(0);
  });

  it('adds the exact drift of rows that bypassed the triggers, in either direction, once', async () => {
    await insertBypassingTriggers(2, '1000.75');
    await db.query('UPDATE balance_sync_provider_sums SET tx_sum = tx_sum + 3 WHERE provider_id = 1');
    const result = await reconcile();
    expect(result.providersChecked).toBe(2);
    expect([...result.corrections].sort((a, b) => a.providerId - b.providerId)).toEqual([
      { providerId: 1, drift: '-3' },
      { providerId: 2, drift: '1000.75' },
    ]);
    expect(await sums()).toEqual([
      { provider_id: 1, s: '300' },
      { provider_id: 2, s: '800.75' },
    ]);
    expect(await valueOf(metrics.reconcileDrift)).toBe(2);
    expect(await valueOf(metrics.reconcileDriftTotal)).toBe(2);
    expect(warnings).toEqual([
      ['balance drift corrected', expect.objectContaining({ corrections: result.corrections })],
    ]);
    expect((await reconcile()).corrections).toEqual([]);
    expect(warnings).toHaveLength(1);
    expect(await valueOf(metrics.reconcileDrift)).toBe(0);
    expect(await valueOf(metrics.reconcileDriftTotal)).toBe(2);
  });

  it('creates the sum of a provider whose rows all bypassed the triggers, and zeroes a sum without rows', async () => {
    await db.query(`INSERT INTO initial_data (provider_name, initial_value) VALUES ('Amex', 0)`);
    await insertBypassingTriggers(3, '7.5');
    await db.query(`INSERT INTO balance_sync_provider_sums (provider_id, tx_sum) VALUES (42, 9)`);
    const result = await reconcile();
    expect(result.corrections).toEqual(
      expect.arrayContaining([
        { providerId: 3, drift: '7.5' },
        { providerId: 42, drift: '-9' },
      ]),
    );
    expect(result.corrections).toHaveLength(2);
    expect(result.providersChecked).toBe(4);
    expect(await sums()).toEqual([
      { provider_id: 1, s: '300' },
      { provider_id: 2, s: '-200' },
      { provider_id: 3, s: '7.5' },
      { provider_id: 42, s: '0' },
    ]);
  });

  it('applies a drift once when two instances reconcile at the same time, and releases its lock', async () => {
    await insertBypassingTriggers(1, '5');
    const results = await Promise.all([reconcile(), reconcile(), reconcile()]);
    expect(results.flatMap((r) => r.corrections)).toEqual([{ providerId: 1, drift: '5' }]);
    expect(await sums()).toEqual([
      { provider_id: 1, s: '305' },
      { provider_id: 2, s: '-200' },
    ]);
    expect(await leftBehind()).toEqual({ lockFree: true, openTransactions: 0 });
  });

  /** The test's pool, whose clients run `hook` once, before the first query whose text has `fragment`. */
  function hookedBefore(fragment: string, hook: (client: pg.PoolClient) => Promise<void>): pg.Pool {
    let pending = true;
    return new Proxy(db, {
      get(target, key) {
        const value = Reflect.get(target, key, target) as unknown;
        if (key !== 'connect') return typeof value === 'function' ? value.bind(target) : value;
        return async () => {
          const client = await target.connect();
          const patched = client as unknown as { query?: unknown; release?: unknown };
          const { query, release } = patched;
          patched.query = async (...args: unknown[]) => {
            if (pending && String(args[0]).includes(fragment)) {
              pending = false;
              await hook(client);
            }
            return await (query as (...a: unknown[]) => Promise<unknown>).apply(client, args);
          };
          // Back in the pool as it was: other tests share it.
          patched.release = (...args: unknown[]) => {
            delete patched.query;
            patched.release = release;
            return (release as (...a: unknown[]) => void).apply(client, args);
          };
          return client;
        };
      },
    });
  }

  const CORRECTION = 'unnest('; // only the query applying a correction has it

  it('holds off a TRUNCATE until its correction commits, so the emptied table ends with zero sums', async () => {
    await insertBypassingTriggers(2, '1000.75');
    const truncater = new pg.Client({ connectionString: scratch.url });
    await truncater.connect();
    const {
      rows: [backend],
    } = await truncater.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    let truncated: Promise<unknown> | undefined;
    // Just before the correction is applied, another session truncates the table and either finishes
    // or queues behind a lock; the correction then runs.
    const pool = hookedBefore(CORRECTION, async () => {
      let finished = false;
      truncated = truncater.query('TRUNCATE historical_transactions').then(() => (finished = true));
      await waitFor('the TRUNCATE to finish or wait for a lock', async () => {
        const { rows: waiting } = await db.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'`,
          [backend?.pid],
        );
        return finished || waiting[0]?.n === 1 ? true : undefined;
      });
    });
    try {
      const result: ReconcileBalancesResult = await env.run(createReconcileBalances(pool, metrics));
      expect(result.corrections).toEqual([{ providerId: 2, drift: '1000.75' }]);
      await truncated;
    } finally {
      await truncater.end();
    }
    expect(await sums()).toEqual([
      { provider_id: 1, s: '0' },
      { provider_id: 2, s: '0' },
    ]);
  });

  it('holds a second reconciliation at the lock until the first has applied its correction', async () => {
    await insertBypassingTriggers(1, '5');
    let resume!: () => void;
    const held = new Promise<void>((resolve) => (resume = resolve));
    let reached!: () => void;
    const atCorrection = new Promise<void>((resolve) => (reached = resolve));
    const pool = hookedBefore(CORRECTION, async () => {
      reached();
      await held;
    });
    const first: Promise<ReconcileBalancesResult> = env.run(createReconcileBalances(pool, metrics));
    let second: Promise<ReconcileBalancesResult> | undefined;
    try {
      // If the first never reaches its correction, this fails with the first's outcome instead of hanging.
      await Promise.race([
        atCorrection,
        first.then(() => Promise.reject(new Error('no correction applied'))),
      ]);
      let secondDone = false;
      second = reconcile().finally(() => (secondDone = true));
      await waitFor('the second reconciliation to wait for the advisory lock (or to finish)', async () => {
        const { rows: waiting } = await db.query(
          `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'advisory'`,
        );
        return secondDone || waiting.length > 0 ? true : undefined;
      });
    } finally {
      resume(); // never leave the first's transaction open for the next test
    }
    const results = await Promise.all([first, second]);
    expect(results.flatMap((r) => r?.corrections ?? [])).toEqual([{ providerId: 1, drift: '5' }]);
    expect(await sums()).toEqual([
      { provider_id: 1, s: '305' },
      { provider_id: 2, s: '-200' },
    ]);
  });

  it('fails visibly when its read fails, and leaves neither its lock nor its transaction behind', async () => {
    await insertBypassingTriggers(1, '5');
    // A real server-side failure inside its transaction: the read then fails with 25P02.
    const failing = hookedBefore('FULL JOIN', async (client) => {
      await client.query('SELECT 1/0').catch(() => undefined);
    });
    await expect(env.run(createReconcileBalances(failing, metrics))).rejects.toMatchObject({ code: '25P02' });
    expect(await leftBehind()).toEqual({ lockFree: true, openTransactions: 0 });
    expect((await reconcile()).corrections).toEqual([{ providerId: 1, drift: '5' }]);
  });

  it("gives up on a writer's lock on a sum before Postgres's deadlock check, so a writer that then truncates is not aborted", async () => {
    await insertBypassingTriggers(1, '5');
    const writer = new pg.Client({ connectionString: scratch.url });
    await writer.connect();
    try {
      await writer.query('BEGIN');
      // Its trigger locks provider 1's sum until the writer's transaction ends.
      await writer.query(
        'INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (1, 7)',
      );
      const failure = await reconcile().catch((error: unknown) => error);
      expect(failure).toMatchObject({ code: '55P03' }); // lock_timeout, not 40P01 (a deadlock)
      await writer.query('TRUNCATE historical_transactions');
      await writer.query('COMMIT');
    } finally {
      await writer.end();
    }
    expect((await reconcile()).corrections).toEqual([]);
    expect(await sums()).toEqual([
      { provider_id: 1, s: '0' },
      { provider_id: 2, s: '0' },
    ]);
  });

  it('corrects the count of NaN/Infinity rows that bypassed the triggers', async () => {
    await insertBypassingTriggers(2, 'NaN');
    expect((await reconcile()).corrections).toEqual([{ providerId: 2, drift: '0', nonfiniteRowsDrift: 1 }]);
    expect(
      await rows(db, 'SELECT nonfinite_rows::int AS n FROM balance_sync_provider_sums WHERE provider_id = 2'),
    ).toEqual([{ n: 1 }]);
  });

  it('reinstalls the balance triggers first when the table lost them', async () => {
    await db.query('DROP TRIGGER balance_sync_after_insert ON historical_transactions');
    await reconcile();
    await db.query('INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (1, 1)');
    expect((await sums())[0]).toEqual({ provider_id: 1, s: '301' });
  });
});
