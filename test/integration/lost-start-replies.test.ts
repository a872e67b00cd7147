import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import type { App } from '../../src/app.js';
import type { Config } from '../../src/config.js';
import {
  appMetric,
  appReadiness,
  pool,
  publisher,
  resetDatabase,
  rows,
  startTestApp,
  stopTestApp,
  testConfig,
  untilIngestSettled,
  waitFor,
} from '../support/harness.js';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js';

const VALUES = Array.from({ length: 20 }, (_, i) => `73.${String(i + 1).padStart(2, '0')}`);
const RECORDED =
  'SELECT transaction_value::text AS value FROM historical_transactions WHERE transaction_value > 73 AND transaction_value < 74 ORDER BY 1';

describe("Temporal's replies to starts lost past the hold", () => {
  let db: pg.Pool;
  let proxy: TcpProxy;
  let config: Config;
  let app: App;

  beforeAll(async () => {
    db = pool();
    await resetDatabase(db);
    proxy = await startTcpProxy(Number(inject('temporalAddress').split(':').pop()));
    config = testConfig({ TEMPORAL_ADDRESS: `127.0.0.1:${proxy.port}`, BRIDGE_PREFETCH: '64' });
    app = await startTestApp(config);
  });

  afterAll(async () => {
    proxy?.dropReplies(false);
    await stopTestApp(app, config);
    await proxy?.close();
    await db.end();
  });

  it('records exactly 20 rows for 20 anonymous messages whose starts reached Temporal and were requeued unanswered', async () => {
    const heldTooLong = 'balance_sync_messages_requeued_total{reason="held_too_long"}';
    await waitFor('ready', async () => ((await appReadiness(app)).status === 200 ? true : undefined));

    // Requests still reach the server (each start creates its run); every answer is lost.
    proxy.dropReplies(true);
    const producer = await publisher(config.INCOMING_QUEUE);
    await producer.publishMany(VALUES.map((value) => [`{"id": 1, "value": ${value}}`, {}] as const));
    await producer.close();
    await waitFor('readiness 503 while Temporal does not answer', async () =>
      (await appReadiness(app)).status === 503 ? true : undefined,
    );
    // Each delivery is held 30 s, retrying its start under the same ID, then handed back.
    await waitFor(
      'all 20 deliveries handed back unanswered',
      async () => ((await appMetric(app, heldTooLong)) >= 20 ? true : undefined),
      60_000,
    );
    expect((await appReadiness(app)).status).toBe(503);
    proxy.dropReplies(false);

    await waitFor(
      'all 20 rows',
      async () => ((await rows(db, RECORDED)).length >= 20 ? true : undefined),
      90_000,
    );
    // Settled: nothing held, nothing running; then still exactly one row per message.
    await untilIngestSettled(app, config.TEMPORAL_TASK_QUEUE);
    expect((await rows(db, RECORDED)).map((row) => row.value)).toEqual(VALUES);
  }, 240_000);
});
