import type { Redis } from 'ioredis';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PublishBalancesResult, ReconcileBalancesResult } from '../../src/activities/index.js';
import type { App } from '../../src/app.js';
import type { Config } from '../../src/config.js';
import {
  drainQueue,
  expectedBalances,
  keydbBalances,
  publisher,
  rows,
  startTestApp,
  stopTestApp,
  testConfig,
  waitFor,
} from '../support/harness.js';
import { isolatedStores, type IsolatedStores } from '../support/isolated-stores.js';
import { startPgBouncer, type PgBouncer } from '../support/pgbouncer.js';

/**
 * The app behind PgBouncer in transaction pooling mode (issue 28 §5), the common production pooler:
 * each transaction may run on another server connection, so session state (a session advisory lock,
 * a SET, a prepared statement) would stay behind on a connection that other clients get next. The
 * PgBouncer is this test's own, with 4 server connections used round robin; ingest, a sync, a
 * reconciliation and a restart all go through it, and no advisory lock is held after any of them.
 */
describe('behind PgBouncer in transaction pooling mode', () => {
  let stores: IsolatedStores;
  let db: pg.Pool; // straight to Postgres, to judge what the app did through PgBouncer
  let keydb: Redis;
  let bouncer: PgBouncer;
  let config: Config;
  let app: App | undefined;
  let runs = 0;

  beforeAll(async () => {
    stores = await isolatedStores('balance_sync_pgbouncer');
    ({ db, keydb } = stores);
    bouncer = await startPgBouncer(stores.overrides.DATABASE_URL);
    config = testConfig({ ...stores.overrides, DATABASE_URL: bouncer.url });
  }, 60_000);

  afterAll(async () => {
    await stopTestApp(app, config);
    await bouncer?.stop();
    await stores?.stop();
  });

  /** Advisory locks anyone holds or waits for in this test's database: through PgBouncer, only the app. */
  const advisoryLocks = async () =>
    await rows(
      db,
      `SELECT l.pid, l.objid, l.granted FROM pg_locks l JOIN pg_database d ON d.oid = l.database
       WHERE l.locktype = 'advisory' AND d.datname = current_database()`,
    );
  const ingest = async (values: number[], prefix: string) => {
    const queue = await publisher(config.INCOMING_QUEUE);
    // Half with a message_id, half without (all the original producer sends).
    await queue.publishMany(
      values.map((value, i) => [
        `{"id": ${1 + (i % 2)}, "value": ${value}}`,
        i % 2 === 0 ? { messageId: `${prefix}-${i}` } : {},
      ]),
    );
    await queue.close();
    await waitFor(
      `${values.length} rows from ${prefix}`,
      async () => {
        const [found] = await rows(
          db,
          'SELECT count(*)::int AS n FROM historical_transactions WHERE transaction_value = ANY ($1::numeric[])',
          [values],
        );
        return found?.n === values.length ? true : undefined;
      },
      60_000,
    );
  };
  const syncNow = async (): Promise<PublishBalancesResult> =>
    await app!.client.workflow.execute('SyncBalances', {
      taskQueue: config.TEMPORAL_SYNC_TASK_QUEUE,
      workflowId: `sync-now-${config.SYNC_SCHEDULE_ID}-${++runs}`,
      args: [{ leadMs: null }],
    });
  const reconcileNow = async (): Promise<ReconcileBalancesResult> =>
    await app!.client.workflow.execute('ReconcileBalances', {
      taskQueue: config.TEMPORAL_SYNC_TASK_QUEUE,
      workflowId: `reconcile-now-${config.RECONCILE_SCHEDULE_ID}-${++runs}`,
    });
  const balances = () => keydbBalances(keydb);

  it('ingests, syncs, reconciles and restarts through it, leaving no advisory lock behind', async () => {
    app = await startTestApp(config);
    // The start-up migration and reconciliation ran through PgBouncer.
    await app.client.workflow.getHandle(`${config.RECONCILE_SCHEDULE_ID}-startup`).result();
    expect(await advisoryLocks()).toEqual([]);

    await ingest(
      Array.from({ length: 20 }, (_, i) => 1001 + i),
      'first',
    );
    // A row that bypassed the balance triggers: the reconciliation must find it and correct the sum.
    const bypass = await db.connect();
    try {
      await bypass.query('BEGIN');
      await bypass.query('ALTER TABLE historical_transactions DISABLE TRIGGER balance_sync_after_insert');
      await bypass.query(
        `INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (2, 7)`,
      );
      await bypass.query('ALTER TABLE historical_transactions ENABLE TRIGGER balance_sync_after_insert');
      await bypass.query('COMMIT');
    } finally {
      bypass.release();
    }
    expect((await reconcileNow()).corrections).toEqual([{ providerId: 2, drift: '7' }]);
    expect(await advisoryLocks()).toEqual([]);
    // A second reconciliation is not blocked by anything the first left on a server connection.
    expect((await reconcileNow()).corrections).toEqual([]);
    await syncNow();
    expect(await balances()).toEqual(await expectedBalances(db));
    expect(await advisoryLocks()).toEqual([]);

    await app.stop();
    app = await startTestApp(config);
    await ingest([2001, 2002, 2003], 'after-restart');
    expect((await reconcileNow()).corrections).toEqual([]);
    await syncNow();
    expect(await balances()).toEqual(await expectedBalances(db));
    expect(await advisoryLocks()).toEqual([]);
    expect(await drainQueue(config.DEAD_LETTER_QUEUE)).toEqual([]);
  }, 240_000);
});
