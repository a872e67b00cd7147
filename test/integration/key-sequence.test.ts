import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../../src/app.js';
import type { Config } from '../../src/config.js';
import {
  appMetric,
  drainQueue,
  publisher,
  rows,
  startTestApp,
  stopTestApp,
  testConfig,
  waitFor,
} from '../support/harness.js';
import { isolatedStores, type IsolatedStores } from '../support/isolated-stores.js';

/**
 * A duplicate of historical_transactions' own id (its sequence set back, as a restore can leave it) is
 * the database being wrong, not the row (issue 28 §4): every new message would meet it, so it is an
 * outage, retried and shown naming the sequence and its fix, and nothing is dead-lettered. Runs on a
 * database of its own: the sequence is set back for the whole database.
 */
describe('ingest: a key sequence left behind by a restore', () => {
  let stores: IsolatedStores;
  let db: pg.Pool;
  let config: Config;
  let app: App;

  beforeAll(async () => {
    stores = await isolatedStores('balance_sync_key_sequence');
    db = stores.db;
    config = testConfig(stores.overrides);
    app = await startTestApp(config);
  }, 60_000);

  afterAll(async () => {
    await stopTestApp(app, config);
    await stores?.stop();
  });

  const readyz = async () => {
    const response = await fetch(`http://127.0.0.1:${app.httpPort}/readyz`);
    return {
      status: response.status,
      body: (await response.json()) as { reasons?: { postgres?: string } },
    };
  };
  const recorded = async (values: string[]) =>
    await rows(
      db,
      `SELECT transaction_value::text AS value, count(*)::int AS n FROM historical_transactions
       WHERE transaction_value = ANY ($1::numeric[]) GROUP BY 1 ORDER BY 1`,
      [values],
    );

  it('retries every message as a Postgres outage naming the sequence and its fix, dead-letters none, and records each once after the fix', async () => {
    // 1,000 rows and the sequence back at 1: each failed insert uses up one id, so it stays behind
    // for the whole test unless an operator sets it.
    await db.query(
      `INSERT INTO historical_transactions (provider_id, transaction_value) SELECT 1, 0 FROM generate_series(1, 1000)`,
    );
    await db.query(`SELECT setval(pg_get_serial_sequence('historical_transactions', 'id'), 1)`);
    const values = ['51.01', '51.02', '51.03'];
    const queue = await publisher(config.INCOMING_QUEUE);
    await queue.publishMany([
      [`{"id": 1, "value": ${values[0]}}`, { messageId: 'seq-1' }],
      [`{"id": 2, "value": ${values[1]}}`, { messageId: 'seq-2' }],
      [`{"id": 1, "value": ${values[2]}}`, {}],
    ]);
    await queue.close();

    const outage = await waitFor('/readyz to name the sequence', async () => {
      const { status, body } = await readyz();
      return status === 503 && body.reasons?.postgres?.includes('sequence')
        ? body.reasons.postgres
        : undefined;
    });
    expect(outage).toMatch(
      /^sequence public\.historical_transactions_id_seq is behind historical_transactions\.id .*duplicate key value violates unique constraint "historical_transactions_pkey" \(SQLSTATE 23505, constraint historical_transactions_pkey\); fix: /,
    );
    expect(await appMetric(app, 'balance_sync_ingest_outage{dependency="postgres"}')).toBe(1);
    expect(
      await appMetric(app, 'balance_sync_ingest_insert_retries_total{sqlstate_class="23"}'),
    ).toBeGreaterThan(0);
    // Still retrying a while later, with nothing dead-lettered and nothing recorded.
    await waitFor('each message to have been retried', async () =>
      (await appMetric(app, 'balance_sync_ingest_insert_retries_total{sqlstate_class="23"}')) >= 9
        ? true
        : undefined,
    );
    expect(
      await appMetric(app, 'balance_sync_messages_dead_lettered_total{code="refused_by_database"}'),
    ).toBe(0);
    expect(await drainQueue(config.DEAD_LETTER_QUEUE)).toEqual([]);
    expect(await recorded(values)).toEqual([]);

    // The fix the message names, as an operator would run it.
    const fix = /; fix: (SELECT setval\(.*\))$/.exec(outage)?.[1];
    expect(fix).toBe(
      "SELECT setval('public.historical_transactions_id_seq', (SELECT max(id) FROM historical_transactions))",
    );
    await db.query(fix!);
    await waitFor(
      'each message recorded',
      async () => ((await recorded(values)).length === values.length ? true : undefined),
      30_000,
    );
    expect(await recorded(values)).toEqual(values.map((value) => ({ value, n: 1 })));
    await waitFor('/readyz 200 again', async () => ((await readyz()).status === 200 ? true : undefined));
    expect(await appMetric(app, 'balance_sync_ingest_outage{dependency="postgres"}')).toBe(0);
    expect(await drainQueue(config.DEAD_LETTER_QUEUE)).toEqual([]);
  }, 120_000);
});
