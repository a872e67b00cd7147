import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import type { App } from '../../src/app.js';
import type { Config } from '../../src/config.js';
import { startDevServer, type DevServer } from '../support/dev-server.js';
import {
  closeBridgeConnections,
  pool,
  publisher,
  resetDatabase,
  rows,
  startTestApp,
  stopTestApp,
  testConfig,
  waitFor,
  appMetric,
  appReadiness,
} from '../support/harness.js';

const VALUES = Array.from({ length: 20 }, (_, i) => `71.${String(i + 1).padStart(2, '0')}`);

describe('a channel drop while Temporal is frozen', () => {
  let db: pg.Pool;
  let server: DevServer;
  let config: Config;
  let app: App;

  beforeAll(async () => {
    db = pool();
    await resetDatabase(db);
    // Its own dev server: this test freezes it (SIGSTOP).
    server = await startDevServer(inject('temporalCliPath'));
    config = testConfig({ TEMPORAL_ADDRESS: server.address, BRIDGE_PREFETCH: '64' });
    app = await startTestApp(config);
  });

  afterAll(async () => {
    server?.process.kill('SIGCONT');
    await stopTestApp(app, config);
    await server?.stop();
    await db.end();
  });

  it('records exactly 20 rows for 20 anonymous messages published while Temporal was frozen and the connections dropped', async () => {
    const paused = 'balance_sync_bridge_consumer_paused';
    const lost = 'balance_sync_consumer_cancellations_total{cause="connection_lost"}';
    await waitFor('consuming', async () => ((await appReadiness(app)).status === 200 ? true : undefined));
    server.process.kill('SIGSTOP');
    // The bridge sees Temporal stop answering and takes no more deliveries (README: delivery guarantees).
    const frozenAt = Date.now();
    await waitFor('the consumer paused', async () =>
      (await appMetric(app, paused)) === 1 ? true : undefined,
    );
    expect(Date.now() - frozenAt).toBeLessThan(10_000);

    const producer = await publisher(config.INCOMING_QUEUE);
    await producer.publishMany(VALUES.map((value) => [`{"id": 1, "value": ${value}}`, {}] as const));
    await producer.close();
    expect(closeBridgeConnections(config.TEMPORAL_TASK_QUEUE)).toBe(2); // consuming and publishing
    await waitFor('the lost connection counted', async () =>
      (await appMetric(app, lost)) > 0 ? true : undefined,
    );
    server.process.kill('SIGCONT');

    await waitFor(
      'all 20 rows',
      async () => {
        const found = await rows(
          db,
          'SELECT count(*)::int AS n FROM historical_transactions WHERE transaction_value > 71 AND transaction_value < 72',
        );
        return found[0]?.n === 20 ? true : undefined;
      },
      90_000,
    );
    // Settled: nothing held, nothing running; then still exactly one row per message.
    await waitFor('nothing in flight', async () =>
      (await appMetric(app, 'balance_sync_bridge_deliveries_in_flight')) === 0 &&
      (await appMetric(app, paused)) === 0
        ? true
        : undefined,
    );
    await waitFor('no IngestTransaction running', async () => {
      const running = await app.client.workflow.count(
        `WorkflowType = 'IngestTransaction' AND ExecutionStatus = 'Running' AND TaskQueue = '${config.TEMPORAL_TASK_QUEUE}'`,
      );
      return running.count === 0 ? true : undefined;
    });
    const recorded = await rows(
      db,
      'SELECT transaction_value::text AS value FROM historical_transactions WHERE transaction_value > 71 AND transaction_value < 72 ORDER BY 1',
    );
    expect(recorded.map((row) => row.value)).toEqual(VALUES);
  }, 180_000);
});
