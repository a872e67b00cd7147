import type { Redis } from 'ioredis';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../../src/app.js';
import type { Config } from '../../src/config.js';
import { migrate } from '../../src/postgres/schema.js';
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

const HOUR = 3_600_000;

/**
 * History older than the app, written before it starts, for the start-up reconciliation to prune at
 * BALANCE_HISTORY_DAYS=1 (cutoff: a day before the newest publication, 2 min ago). Publications carry
 * no minute (as an on-demand run's), so the schedule's first minute is the only one with a minute.
 */
function seededHistory(now: number) {
  const at = (msAgo: number) => new Date(now - msAgo).toISOString();
  const instants = {
    threeDays: at(72 * HOUR),
    twoDays: at(48 * HOUR),
    /** The last publication at or before the cutoff: the oldest one kept. */
    beforeCutoff: at(25 * HOUR),
    afterCutoff: at(23 * HOUR),
    newest: at(2 * 60_000),
  };
  const { threeDays, twoDays, beforeCutoff, afterCutoff } = instants;
  const changes: [key: string, instant: string, value: string][] = [
    ['1_Visa', threeDays, '100'], // superseded at the oldest kept publication: pruned
    ['1_Visa', beforeCutoff, '200'],
    ['1_Visa', afterCutoff, '300'],
    ['2_Mastercard', threeDays, '50'], // its value at the oldest kept publication: kept
    ['2_Mastercard', afterCutoff, '70'],
  ];
  /** Each key's value at the instant, as the app writes a checkpoint. */
  const checkpoints = [threeDays, twoDays, afterCutoff].map((instant) => ({
    instant,
    balances: Object.fromEntries(
      changes.filter((change) => change[1] <= instant).map(([key, , value]) => [key, value]),
    ),
  }));
  return { instants, changes, checkpoints };
}

/** The app as deployed: the real schedule's minute recorded, served on GET /balances, pruned with reconciliation. */
describe('balance history in the running app', () => {
  const TOKEN = 'balances-token-for-the-app-test';
  let db: pg.Pool;
  let keydb: Redis;
  let config: Config;
  let app: App;
  let seeded: ReturnType<typeof seededHistory>;

  beforeAll(async () => {
    db = pool();
    await resetDatabase(db);
    await migrate(db);
    seeded = seededHistory(Date.now());
    for (const instant of Object.values(seeded.instants)) {
      await db.query(
        `INSERT INTO balance_sync_publications (instant, written_at, workflow_id, run_id, attempt)
         VALUES ($1, $1, 'seeded-history', 'seeded-history', 1)`,
        [instant],
      );
    }
    for (const [key, instant, value] of seeded.changes) {
      await db.query('INSERT INTO balance_sync_balance_changes (key, instant, value) VALUES ($1, $2, $3)', [
        key,
        instant,
        value,
      ]);
    }
    for (const { instant, balances } of seeded.checkpoints) {
      await db.query('INSERT INTO balance_sync_balance_checkpoints (instant, balances) VALUES ($1, $2)', [
        instant,
        balances,
      ]);
    }
    keydb = await resetKeydb();
    config = testConfig({ BALANCES_API_TOKEN: TOKEN, BALANCE_HISTORY_DAYS: '1' });
    app = await startTestApp(config);
  });

  afterAll(async () => {
    await stopTestApp(app, config);
    keydb?.disconnect();
    await db?.end();
  });

  it('serves the minute the schedule published, equal to KeyDB, on GET /balances from when KeyDB applied it', async () => {
    const { minute, instant } = await waitFor(
      'a minute recorded by the schedule',
      async () =>
        (
          await rows(db, 'SELECT minute, instant FROM balance_sync_publications WHERE minute IS NOT NULL')
        )[0] as { minute: Date; instant: Date } | undefined,
      90_000,
    );
    const held = Object.fromEntries(
      await Promise.all(['1_Visa', '2_Mastercard'].map(async (key) => [key, await keydb.get(key)])),
    );
    const url = `http://127.0.0.1:${app.httpPort}/balances?at=${instant.toISOString()}`;
    const response = await fetch(url, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({
      minute: minute.toISOString(),
      publishedAt: instant.toISOString(),
      balances: held,
    });
    // KeyDB's TIME when it applied the minute's write: not before the minute.
    expect(instant.getTime()).toBeGreaterThanOrEqual(minute.getTime());
    expect((await fetch(url)).status).toBe(401);
  }, 120_000); // the wait above allows 90 s for the schedule's next minute: the test must too

  it('prunes, at start-up with BALANCE_HISTORY_DAYS=1, only the history no answer after the cutoff needs', async () => {
    const result = (await app.client.workflow
      .getHandle(`${config.RECONCILE_SCHEDULE_ID}-startup`)
      .result()) as {
      historyPruned?: { cutoff: string; oldestKept: string | null };
    };
    const { threeDays, twoDays, beforeCutoff, afterCutoff, newest } = seeded.instants;
    // A day before the newest publication then: the seeded one, or the schedule's first minute.
    const cutoff = Date.parse(result.historyPruned?.cutoff ?? '');
    expect(cutoff).toBeGreaterThanOrEqual(Date.parse(newest) - 24 * HOUR);
    expect(cutoff).toBeLessThanOrEqual(Date.now() - 24 * HOUR);
    expect(result.historyPruned?.oldestKept).toBe(beforeCutoff);

    const seededRows = async (sql: string) =>
      (await rows(db, sql, [newest])).map((row) =>
        Object.values(row).map((value) => (value instanceof Date ? value.toISOString() : value)),
      );
    // Gone: the publications before the oldest kept one, each change a later one at or before it
    // superseded, and the checkpoints before the last one at or before it.
    expect(
      await seededRows('SELECT instant FROM balance_sync_publications WHERE instant <= $1 ORDER BY 1'),
    ).toEqual([[beforeCutoff], [afterCutoff], [newest]]);
    expect(
      await seededRows(
        `SELECT key, instant, value FROM balance_sync_balance_changes
         WHERE instant <= $1 ORDER BY key, instant`,
      ),
    ).toEqual([
      ['1_Visa', beforeCutoff, '200'],
      ['1_Visa', afterCutoff, '300'],
      ['2_Mastercard', threeDays, '50'],
      ['2_Mastercard', afterCutoff, '70'],
    ]);
    expect(
      await seededRows('SELECT instant FROM balance_sync_balance_checkpoints WHERE instant <= $1 ORDER BY 1'),
    ).toEqual([[twoDays], [afterCutoff]]);
  });
});
