import { MockActivityEnvironment } from '@temporalio/testing';
import { execFileSync } from 'node:child_process';
import { Redis } from 'ioredis';
import pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { createActivities } from '../../src/activities/index.js';
import type { PublishBalancesResult, ReconcileBalancesResult } from '../../src/activities/index.js';
import type { App } from '../../src/app.js';
import type { Config } from '../../src/config.js';
import { createMetrics } from '../../src/metrics.js';
import { migrate } from '../../src/postgres/schema.js';
import { ensureSchedules, type ScheduleSettings } from '../../src/schedules/schedules.js';
import {
  expectedBalances,
  keydbBalances,
  pool,
  publisher,
  resetDatabase,
  resetKeydb,
  rows,
  silentLog,
  startTestApp,
  stopTestApp,
  testConfig,
  waitFor,
} from '../support/harness.js';
import { startTcpProxy } from '../support/tcp-proxy.js';

/** Runs `sql` with the balance triggers disabled, as a bulk load or a careless admin might. */
async function bypassingTriggers(db: pg.Pool, sql: string, params: unknown[] = []) {
  const client = await db.connect();
  try {
    await client.query('BEGIN');
    await client.query('ALTER TABLE historical_transactions DISABLE TRIGGER USER');
    await client.query(sql, params);
    await client.query('ALTER TABLE historical_transactions ENABLE TRIGGER USER');
    await client.query('COMMIT');
  } finally {
    client.release();
  }
}

/** Writes a row with the balance triggers disabled. */
async function insertBypassingTriggers(db: pg.Pool, providerId: number, value: string) {
  await bypassingTriggers(
    db,
    'INSERT INTO historical_transactions (provider_id, transaction_value) VALUES ($1, $2)',
    [providerId, value],
  );
}

/** Rejects if `promise` has not settled within `ms`: for operations that would otherwise hang. */
async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not complete within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

describe('SyncBalances: Postgres → KeyDB', () => {
  let db: pg.Pool;
  let keydb: Redis;
  let config: Config;
  let app: App;
  let settings: ScheduleSettings;

  beforeAll(async () => {
    db = pool();
    await resetDatabase(db);
    keydb = await resetKeydb();
    config = testConfig();
    app = await startTestApp(config);
    settings = {
      taskQueue: config.TEMPORAL_SYNC_TASK_QUEUE,
      syncScheduleId: config.SYNC_SCHEDULE_ID,
      syncLeadSeconds: config.SYNC_LEAD_SECONDS,
      reconcileScheduleId: config.RECONCILE_SCHEDULE_ID,
      reconcileCron: config.RECONCILE_CRON,
    };
    // Tests here publish on demand; the real minute boundary has its own test file.
    await app.client.schedule.getHandle(config.SYNC_SCHEDULE_ID).pause('sync.test: on-demand runs only');
  });

  afterAll(async () => {
    await stopTestApp(app, config);
    keydb.disconnect();
    await db.end();
  });

  let runs = 0;
  const syncNow = async (): Promise<PublishBalancesResult> =>
    await app.client.workflow.execute('SyncBalances', {
      taskQueue: config.TEMPORAL_SYNC_TASK_QUEUE,
      workflowId: `sync-now-${config.SYNC_SCHEDULE_ID}-${++runs}`,
      args: [{ leadMs: null }],
    });
  const balances = () => keydbBalances(keydb);

  it('writes 1_Visa=1300 and 2_Mastercard=1800 from the seeded tables', async () => {
    const result = await syncNow();
    expect(await balances()).toEqual({ '1_Visa': '1300', '2_Mastercard': '1800' });
    expect(result).toMatchObject({ providers: 2, boundary: null, keysRemoved: [] });
  });

  it('writes 1_Visa=1900 after {"id":1,"value":600} is ingested', async () => {
    const queue = await publisher(config.INCOMING_QUEUE);
    await queue.publish('{"id": 1, "value": 600}');
    await queue.close();
    await waitFor('the ingested row', async () =>
      (await rows(db, 'SELECT 1 FROM historical_transactions WHERE transaction_value = 600')).length
        ? true
        : undefined,
    );
    await syncNow();
    expect(await balances()).toEqual({ '1_Visa': '1900', '2_Mastercard': '1800' });
  });

  it('prints decimal and negative balances as Postgres does, and a provider without rows at its initial value', async () => {
    await db.query(`INSERT INTO historical_transactions (provider_id, transaction_value)
                    VALUES (1, 0.1), (1, 0.2), (2, -2000.25), (2, 0.50)`);
    await db.query(`INSERT INTO initial_data (provider_name, initial_value) VALUES ('Amex', 0.50)`);
    await syncNow();
    expect(await balances()).toEqual({ '1_Visa': '1900.3', '2_Mastercard': '-199.75', '3_Amex': '0.5' });
  });

  it('removes the key of a provider that no longer exists, and writes no other keys', async () => {
    await db.query(`DELETE FROM initial_data WHERE provider_name = 'Amex'`);
    const result = await syncNow();
    expect(result.keysRemoved).toEqual(['3_Amex']);
    expect(Object.keys(await balances())).toEqual(['1_Visa', '2_Mastercard']);
  });

  it('includes rows written straight into Postgres by others in the very next sync', async () => {
    // As the original producer does on every restart: it re-runs its seed inserts.
    await db.query(
      `INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (1, 100), (1, 200), (2, -200)`,
    );
    await syncNow();
    expect(await balances()).toEqual({ '1_Visa': '2200.3', '2_Mastercard': '-399.75' });
  });

  it('reconciliation finds and corrects rows that bypassed the running sums', async () => {
    await insertBypassingTriggers(db, 2, '1000.75');
    const reconciled: ReconcileBalancesResult = await app.client.workflow.execute('ReconcileBalances', {
      taskQueue: config.TEMPORAL_SYNC_TASK_QUEUE,
      workflowId: `reconcile-now-${config.RECONCILE_SCHEDULE_ID}`,
    });
    expect(reconciled.corrections).toEqual([{ providerId: 2, drift: '1000.75' }]);
    await syncNow();
    expect(await balances()).toEqual({ '1_Visa': '2200.3', '2_Mastercard': '601' });
    expect(await balances()).toEqual(await expectedBalances(db));
  });

  it('keeps running sums exact while two instances reconcile during concurrent inserts', async () => {
    const instances = [pool(), pool()];
    const activities = instances.map((p) => createActivities({ pool: p, keydb, metrics: createMetrics() }));
    const env = new MockActivityEnvironment();
    const inserts = (async () => {
      for (let i = 0; i < 100; i++) {
        const target = instances[i % 2]!;
        await target.query(
          `INSERT INTO historical_transactions (provider_id, transaction_value) VALUES ($1, $2)`,
          [1 + (i % 2), `${i}.01`],
        );
      }
    })();
    // A bypassing write makes real drift for the two reconcilers to race over.
    await insertBypassingTriggers(db, 1, '5');
    const reconcile = (a: (typeof activities)[number]) =>
      env.run<[], ReconcileBalancesResult, () => Promise<ReconcileBalancesResult>>(a.reconcileBalances);
    const results = await Promise.all(activities.flatMap((a) => [reconcile(a), reconcile(a)]));
    await inserts;
    const corrections = results.flatMap((r) => r.corrections);
    expect(corrections).toEqual([{ providerId: 1, drift: '5' }]);
    const mismatches = await rows(
      db,
      `SELECT provider_id FROM (SELECT provider_id, sum(transaction_value) AS total FROM historical_transactions GROUP BY 1) f
       FULL JOIN balance_sync_provider_sums s USING (provider_id) WHERE f.total IS DISTINCT FROM s.tx_sum`,
    );
    expect(mismatches).toEqual([]);
    await syncNow();
    expect(await balances()).toEqual(await expectedBalances(db));
    await Promise.all(instances.map((p) => p.end()));
  });

  it('never lets a reader see half of one sync and half of the next, deleted keys included, even when the network splits the write', async () => {
    // The sync writes through a proxy that hands KeyDB its bytes a few at a time, as a congested
    // network may: the server then reads the write in many pieces and serves the readers between
    // them. Only MULTI/EXEC keeps them out; a pipeline (one socket write) is not atomic here.
    // 32 bytes a piece: every request (the fenced write's EVALSHA is hundreds of bytes, a pipeline's
    // MSET alone over 32) still reaches KeyDB in pieces 1 ms apart; 8 took over the 1 s command
    // timeout beside CI's other suites.
    const proxy = await startTcpProxy(keydb.options.port!, { splitClientWrites: 32 });
    const proxied = new Redis({ ...keydb.options, port: proxy.port });
    const { publishBalances } = createActivities({ pool: db, keydb: proxied, metrics: createMetrics() });
    const syncWith = (publish: typeof publishBalances) => (): Promise<PublishBalancesResult> =>
      new MockActivityEnvironment({ startToCloseTimeoutMs: 0, scheduleToCloseTimeoutMs: 0 }).run(publish, {
        nominalTime: new Date().toISOString(),
        leadMs: null,
      });
    const syncNow = syncWith(publishBalances);
    // The first sync straight to KeyDB: it loads the fenced-write script, so the split syncs send its
    // digest (EVALSHA), not its 1.4 KB text 32 bytes a millisecond (past the 1 s command timeout under load).
    await syncWith(createActivities({ pool: db, keydb, metrics: createMetrics() }).publishBalances)();
    const sumOf = (values: (string | null)[]) => values.reduce((sum, v) => sum + Number(v ?? 0), 0);
    const total = sumOf(await keydb.mget('1_Visa', '2_Mastercard'));
    // Each sync keeps the sum over all keys at `total`: a provider is added with value moved off Visa,
    // then removed with that value moved back. The removal sync writes 1_Visa AND deletes the
    // provider's key: a reader between the two (no MULTI) sees the value twice.
    let extraKey = 'none';
    let reads = 0;
    const torn: string[] = [];
    let done = false;
    const readers = [0, 1].map(async () => {
      const watcher = keydb.duplicate();
      while (!done) {
        const keys = ['1_Visa', '2_Mastercard', extraKey];
        const values = await watcher.mget(...keys);
        reads++;
        if (Math.abs(sumOf(values) - total) > 1e-6) torn.push(JSON.stringify([keys, values]));
      }
      watcher.disconnect();
    });
    /** A sync, then at least one more read by each reader before the next step. */
    const syncAndRead = async () => {
      const result = await syncNow();
      const after = reads;
      await waitFor('a read after the sync', () => Promise.resolve(reads >= after + 2 ? true : undefined));
      return result;
    };
    for (let i = 1; i <= 10; i++) {
      const amount = i * 1000;
      const client = await db.connect();
      try {
        await client.query('BEGIN');
        const added = await client.query<{ id: number }>(
          `INSERT INTO initial_data (provider_name, initial_value) VALUES ('Amex', $1) RETURNING id`,
          [amount],
        );
        await client.query(
          `INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (1, -$1::numeric)`,
          [amount],
        );
        await client.query('COMMIT');
        extraKey = `${added.rows[0]!.id}_Amex`;
      } finally {
        client.release();
      }
      await syncAndRead();
      await db.query(
        `WITH moved AS (INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (1, $1))
         DELETE FROM initial_data WHERE provider_name = 'Amex'`,
        [amount],
      );
      expect((await syncAndRead()).keysRemoved).toEqual([extraKey]);
    }
    done = true;
    await Promise.all(readers);
    proxied.disconnect();
    await proxy.close();
    expect(torn).toEqual([]);
    expect(reads).toBeGreaterThanOrEqual(40);
    expect(sumOf(await keydb.mget('1_Visa', '2_Mastercard'))).toBeCloseTo(total, 6);
    expect(await keydb.exists(extraKey)).toBe(0);
  });

  const reconcileNow = async (): Promise<ReconcileBalancesResult> =>
    await app.client.workflow.execute('ReconcileBalances', {
      taskQueue: config.TEMPORAL_SYNC_TASK_QUEUE,
      workflowId: `reconcile-now-${config.RECONCILE_SCHEDULE_ID}-${++runs}`,
    });
  const unpublishableGauge = async () => {
    const response = await fetch(`http://127.0.0.1:${app.httpPort}/metrics`);
    return /^balance_sync_sync_unpublishable_providers (\S+)/m.exec(await response.text())?.[1];
  };

  describe('NaN and Infinity in NUMERIC', () => {
    it('does not publish a provider with a NaN row, keeps its last value and names it; exact the sync after the row is deleted', async () => {
      await syncNow();
      const lastGood = await keydb.get('2_Mastercard');
      await db.query(
        `INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (2, 'NaN'), (1, 7)`,
      );
      const poisoned = await syncNow();
      expect(poisoned.unpublishable).toEqual([
        {
          providerId: 2,
          key: '2_Mastercard',
          reason: '1 non-finite transaction_value row(s) in its history',
        },
      ]);
      expect(poisoned.keysRemoved).toEqual([]);
      expect(await keydb.get('2_Mastercard')).toBe(lastGood);
      expect((await expectedBalances(db))['1_Visa']).toBe(await keydb.get('1_Visa'));
      expect(await unpublishableGauge()).toBe('1');

      await db.query(`DELETE FROM historical_transactions WHERE transaction_value = 'NaN'`);
      const healed = await syncNow();
      expect(healed.unpublishable).toEqual([]);
      expect(await balances()).toEqual(await expectedBalances(db));
      expect(await unpublishableGauge()).toBe('0');
    });

    it('holds a provider back while an Infinity (inserted or updated in) is in its history', async () => {
      const lastGood = await keydb.get('1_Visa');
      const id = (
        await rows(
          db,
          `INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (1, 'Infinity'), (1, '-Infinity') RETURNING id`,
        )
      )[0]!.id as number;
      expect((await syncNow()).unpublishable).toMatchObject([{ providerId: 1, key: '1_Visa' }]);
      await db.query(
        `UPDATE historical_transactions SET transaction_value = 3 WHERE transaction_value = '-Infinity'`,
      );
      expect((await syncNow()).unpublishable).toEqual([
        { providerId: 1, key: '1_Visa', reason: '1 non-finite transaction_value row(s) in its history' },
      ]);
      expect(await keydb.get('1_Visa')).toBe(lastGood);
      await db.query(`UPDATE historical_transactions SET transaction_value = 4 WHERE id = $1`, [id]);
      expect((await syncNow()).unpublishable).toEqual([]);
      expect(await balances()).toEqual(await expectedBalances(db));
    });

    it('does not publish a provider whose initial_value is NaN', async () => {
      const id = (
        await rows(
          db,
          `INSERT INTO initial_data (provider_name, initial_value) VALUES ('Poisoned', 'NaN') RETURNING id`,
        )
      )[0]!.id as number;
      const result = await syncNow();
      expect(result.unpublishable).toEqual([
        { providerId: id, key: `${id}_Poisoned`, reason: 'initial_value is NaN' },
      ]);
      expect(await keydb.exists(`${id}_Poisoned`)).toBe(0);
      await db.query('DELETE FROM initial_data WHERE id = $1', [id]);
    });

    it('reconciliation counts a NaN row that bypassed the triggers instead of adding NaN, and uncounts it', async () => {
      await insertBypassingTriggers(db, 2, 'NaN');
      expect((await reconcileNow()).corrections).toEqual([
        { providerId: 2, drift: '0', nonfiniteRowsDrift: 1 },
      ]);
      expect((await syncNow()).unpublishable).toMatchObject([{ providerId: 2 }]);
      await bypassingTriggers(db, `DELETE FROM historical_transactions WHERE transaction_value = 'NaN'`);
      expect((await reconcileNow()).corrections).toEqual([
        { providerId: 2, drift: '0', nonfiniteRowsDrift: -1 },
      ]);
      expect((await syncNow()).unpublishable).toEqual([]);
      expect(await balances()).toEqual(await expectedBalances(db));
    });

    it('migration recounts a sum left NaN by an earlier version', async () => {
      await db.query(`UPDATE balance_sync_provider_sums SET tx_sum = 'NaN' WHERE provider_id = 2`);
      expect(await migrate(db)).toEqual({ installedTriggers: true });
      await syncNow();
      expect(await balances()).toEqual(await expectedBalances(db));
    });
  });

  it('a reconciliation that fails midway keeps no lock: another instance migrates and reconciles after it', async () => {
    // One connection with a short lock_timeout: the drift query fails while a table lock is held.
    const failing = new pg.Pool({
      connectionString: inject('databaseUrl'),
      max: 1,
      options: '-c lock_timeout=300',
    });
    const blocker = await db.connect();
    await blocker.query('BEGIN');
    await blocker.query('LOCK TABLE historical_transactions IN ACCESS EXCLUSIVE MODE');
    const env = new MockActivityEnvironment();
    const { reconcileBalances } = createActivities({ pool: failing, keydb, metrics: createMetrics() });
    await expect(
      env.run<[], ReconcileBalancesResult, () => Promise<ReconcileBalancesResult>>(reconcileBalances),
    ).rejects.toThrow(/lock timeout/);
    await blocker.query('ROLLBACK');
    blocker.release();

    const other = pool();
    await within(5_000, "another instance's migrate()", migrate(other));
    const next = await within(
      5_000,
      'the next reconciliation',
      env.run<[], ReconcileBalancesResult, () => Promise<ReconcileBalancesResult>>(
        createActivities({ pool: other, keydb, metrics: createMetrics() }).reconcileBalances,
      ),
    );
    expect(next.corrections).toEqual([]);
    await Promise.all([other.end(), failing.end()]);
  });

  it('a publishBalances attempt past its own timeout, or cancelled, writes nothing', async () => {
    await keydb.set('1_Visa', 'untouched');
    const { publishBalances } = createActivities({ pool: db, keydb, metrics: createMetrics() });
    const now = Date.now();
    // Less time than the write's 1.5 s margin from the attempt's arrival (counted on this worker's
    // monotonic clock, whatever its wall clock says).
    const timedOut = new MockActivityEnvironment({
      scheduledTimestampMs: now,
      currentAttemptScheduledTimestampMs: now,
      startToCloseTimeoutMs: 1_000,
      scheduleToCloseTimeoutMs: 50_000,
    });
    const input = { nominalTime: new Date(now).toISOString(), leadMs: null };
    await expect(timedOut.run(publishBalances, input)).rejects.toThrow(/reached its timeout; not writing/);
    const cancelled = new MockActivityEnvironment({ startToCloseTimeoutMs: 0, scheduleToCloseTimeoutMs: 0 });
    cancelled.cancel();
    await expect(cancelled.run(publishBalances, input)).rejects.toThrow(/cancelled; not writing/);
    expect(await keydb.get('1_Visa')).toBe('untouched');
    await syncNow();
  });

  it('stays exact after someone drops and recreates historical_transactions', async () => {
    await db.query(`
      DROP TABLE historical_transactions;
      CREATE TABLE historical_transactions (
        id SERIAL PRIMARY KEY,
        provider_id INTEGER REFERENCES initial_data(id),
        transaction_value NUMERIC NOT NULL
      );
      INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (1, 100), (1, 200), (2, -200);`);
    const result = await syncNow();
    expect(result.triggersReinstalled).toBe(true);
    expect(await balances()).toEqual(await expectedBalances(db));
    expect(await balances()).toEqual({ '1_Visa': '1300', '2_Mastercard': '1800' });
  });

  describe('schedule lifecycle', () => {
    it('is created once and left unchanged on restart with the same definition', async () => {
      expect(await ensureSchedules(app.client, settings, silentLog())).toEqual({
        sync: 'unchanged',
        reconcile: 'unchanged',
      });
      const ids: string[] = [];
      for await (const schedule of app.client.schedule.list()) ids.push(schedule.scheduleId);
      expect(ids.filter((id) => id === config.SYNC_SCHEDULE_ID)).toHaveLength(1);
    });

    it('applies a changed spec and keeps the pause made with the temporal CLI across a restart', async () => {
      await app.client.schedule.getHandle(config.SYNC_SCHEDULE_ID).unpause('reset');
      execFileSync(
        inject('temporalCliPath'),
        [
          'schedule',
          'toggle',
          '--schedule-id',
          config.SYNC_SCHEDULE_ID,
          '--pause',
          '--reason',
          'maintenance window',
          '--address',
          inject('temporalAddress'),
          '--namespace',
          inject('temporalNamespace'),
        ],
        { stdio: 'ignore' },
      );
      await app.stop();
      app = await startTestApp({ ...config, SYNC_LEAD_SECONDS: 3 });
      const description = await app.client.schedule.getHandle(config.SYNC_SCHEDULE_ID).describe();
      expect(description.state.paused).toBe(true);
      expect(description.state.note).toBe('maintenance window');
      expect(description.spec.calendars?.[0]?.second).toEqual([{ start: 57, end: 57, step: 1 }]);
      const logged: string[] = [];
      const capture = pino({ level: 'info' }, { write: (line: string) => logged.push(line) });
      expect(await ensureSchedules(app.client, { ...settings, syncLeadSeconds: 3 }, capture)).toMatchObject({
        sync: 'unchanged',
      });
      // A start-up that finds the sync paused says so.
      const warnings = logged.map((line) => JSON.parse(line)).filter((entry) => entry.level === 40);
      expect(warnings).toMatchObject([
        {
          scheduleId: config.SYNC_SCHEDULE_ID,
          note: 'maintenance window',
          msg: `schedule ${config.SYNC_SCHEDULE_ID} is paused: balances are not published to KeyDB until it is unpaused`,
        },
      ]);
    });

    it('updates KeyDB when triggered, even while paused', async () => {
      await keydb.set('1_Visa', 'stale');
      execFileSync(
        inject('temporalCliPath'),
        [
          'schedule',
          'trigger',
          '--schedule-id',
          config.SYNC_SCHEDULE_ID,
          // As the README runs it: the schedule's SKIP would drop a trigger while a run is in its lead.
          '--overlap-policy',
          'AllowAll',
          '--address',
          inject('temporalAddress'),
          '--namespace',
          inject('temporalNamespace'),
        ],
        { stdio: 'ignore' },
      );
      await waitFor('the triggered sync', async () =>
        (await keydb.get('1_Visa')) !== 'stale' ? true : undefined,
      );
      expect(await balances()).toEqual(await expectedBalances(db));
    });
  });
});
