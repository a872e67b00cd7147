import type { Redis } from 'ioredis';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../../src/app.js';
import type { Config } from '../../src/config.js';
import {
  pool,
  resetDatabase,
  resetKeydb,
  rows,
  startTestApp,
  stopTestApp,
  testConfig,
  waitFor,
} from '../support/harness.js';

/** The app as deployed: the real schedule's minute recorded, served on GET /balances, pruned with reconciliation. */
describe('balance history in the running app', () => {
  const TOKEN = 'balances-token-for-the-app-test';
  let db: pg.Pool;
  let keydb: Redis;
  let config: Config;
  let app: App;

  beforeAll(async () => {
    db = pool();
    await resetDatabase(db);
    keydb = await resetKeydb();
    config = testConfig({ BALANCES_API_TOKEN: TOKEN, BALANCE_HISTORY_DAYS: '1' });
    app = await startTestApp(config);
  });

  afterAll(async () => {
    await stopTestApp(app, config);
    keydb?.disconnect();
    await db?.end();
  });

  it('serves the minute the schedule published, equal to KeyDB, on GET /balances', async () => {
    const minute = await waitFor(
      'a minute recorded by the schedule',
      async () =>
        (await rows(db, 'SELECT minute FROM balance_sync_publications WHERE minute IS NOT NULL'))[0]
          ?.minute as Date | undefined,
      90_000,
    );
    const held = Object.fromEntries(
      await Promise.all(['1_Visa', '2_Mastercard'].map(async (key) => [key, await keydb.get(key)])),
    );
    const url = `http://127.0.0.1:${app.httpPort}/balances?at=${minute.toISOString()}`;
    const response = await fetch(url, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({
      minute: minute.toISOString(),
      publishedAt: expect.any(String),
      balances: held,
    });
    expect((await fetch(url)).status).toBe(401);
  }, 120_000); // the wait above allows 90 s for the schedule's next minute: the test must too

  it('prunes the history after the start-up reconciliation, with BALANCE_HISTORY_DAYS', async () => {
    const result = (await app.client.workflow
      .getHandle(`${config.RECONCILE_SCHEDULE_ID}-startup`)
      .result()) as {
      historyPruned?: { cutoff: string };
    };
    const cutoff = Date.parse(result.historyPruned?.cutoff ?? '');
    expect(Math.abs(cutoff - (Date.now() - 86_400_000))).toBeLessThan(10 * 60_000);
  });
});
