import amqplib, { type Channel, type ChannelModel } from 'amqplib';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../../src/app.js';
import type { Config } from '../../src/config.js';
import { REASON_CODE_HEADER } from '../../src/bridge/dead-letter.js';
import {
  bridgeConnectionPids,
  deleteQueues,
  pool,
  publisher,
  RABBITMQ_URL,
  resetDatabase,
  rows,
  startTestApp,
  stopTestApp,
  testConfig,
  waitFor,
  appMetric,
  appReadiness,
} from '../support/harness.js';

const rowsWithValue = (db: pg.Pool, value: string) =>
  rows(db, 'SELECT id FROM historical_transactions WHERE transaction_value = $1::numeric', [value]);

describe('the bridge consumes again after the broker takes its consumer away', () => {
  let db: pg.Pool;
  let config: Config;
  let app: App;
  let amqp: ChannelModel;
  let admin: Channel;

  beforeAll(async () => {
    db = pool();
    await resetDatabase(db);
    config = testConfig();
    app = await startTestApp(config);
    amqp = await amqplib.connect(RABBITMQ_URL);
    admin = await amqp.createChannel();
    await waitFor('consuming', async () => ((await appReadiness(app)).status === 200 ? true : undefined));
  });

  afterAll(async () => {
    await amqp.close();
    await stopTestApp(app, config);
    await db.end();
  });

  it('re-declares a deleted incoming queue, consumes again on the same connection after ~1 s, and ingests what a producer publishes then', async () => {
    const cancel = 'balance_sync_consumer_cancellations_total{cause="cancel"}';
    const before = await appMetric(app, cancel);
    const [connection] = await bridgeConnectionPids(config.TEMPORAL_TASK_QUEUE, 'consuming');
    expect(connection).toBeDefined();
    await admin.deleteQueue(config.INCOMING_QUEUE);
    await waitFor('the cancel counted', async () =>
      (await appMetric(app, cancel)) > before ? true : undefined,
    );
    const cancelledAt = Date.now();
    // docs/FAILURE-MATRIX.md: queue re-declared, consumed again after 1 s, on the same channel (no reconnect).
    await waitFor('a consumer again', async () => {
      // A channel per look: checking a queue that is not there yet closes the channel.
      const probe = await amqp.createChannel();
      probe.on('error', () => undefined);
      try {
        return (await probe.checkQueue(config.INCOMING_QUEUE)).consumerCount === 1 ? true : undefined;
      } finally {
        await probe.close().catch(() => undefined);
      }
    });
    const after = Date.now() - cancelledAt;
    expect(after).toBeGreaterThanOrEqual(800);
    expect(after).toBeLessThan(2_500);
    expect(await bridgeConnectionPids(config.TEMPORAL_TASK_QUEUE, 'consuming')).toEqual([connection]);
    expect((await appReadiness(app)).status).toBe(200);
    const producer = await publisher(config.INCOMING_QUEUE);
    await producer.publish('{"id": 1, "value": 41.01}', { messageId: 'after-delete' });
    await producer.close();
    await waitFor('the row', async () =>
      (await rowsWithValue(db, '41.01')).length === 1 ? true : undefined,
    );
  });

  it('is not ready while it cannot consume (queue re-declared with other arguments), and recovers', async () => {
    const closed = 'balance_sync_consumer_cancellations_total{cause="channel_closed"}';
    const before = await appMetric(app, closed);
    // Our declaration (durable, no arguments) now fails with PRECONDITION_FAILED, closing the channel.
    await admin.deleteQueue(config.INCOMING_QUEUE);
    await admin.assertQueue(config.INCOMING_QUEUE, { durable: true, arguments: { 'x-max-length': 1000 } });
    const notReady = await waitFor('/readyz 503', async () => {
      const ready = await appReadiness(app);
      return ready.status === 503 ? ready : undefined;
    });
    expect(notReady.checks.rabbitmq).toBe(false);
    await waitFor('the closed channel counted', async () =>
      (await appMetric(app, closed)) > before ? true : undefined,
    );
    // The operator fixes the queue; the bridge's next forced reconnect declares and consumes.
    await admin.deleteQueue(config.INCOMING_QUEUE);
    const producer = await publisher(config.INCOMING_QUEUE);
    await producer.publish('{"id": 2, "value": 42.02}', { messageId: 'after-conflict' });
    await producer.close();
    await waitFor(
      'the row',
      async () => ((await rowsWithValue(db, '42.02')).length === 1 ? true : undefined),
      45_000,
    );
    expect((await appReadiness(app)).status).toBe(200);
  });
});

describe('a dead-letter queue that refuses messages', () => {
  let db: pg.Pool;
  let config: Config;
  let app: App;
  let amqp: ChannelModel;
  let admin: Channel;

  beforeAll(async () => {
    db = pool();
    await resetDatabase(db);
    config = testConfig();
    amqp = await amqplib.connect(RABBITMQ_URL);
    admin = await amqp.createChannel();
    // An operator's bounded dead-letter queue, already full: the broker nacks every publish.
    await admin.assertQueue(config.DEAD_LETTER_QUEUE, {
      durable: true,
      arguments: { 'x-max-length': 0, 'x-overflow': 'reject-publish' },
    });
    app = await startTestApp(config);
  });

  afterAll(async () => {
    await amqp.close();
    await stopTestApp(app, config);
    await deleteQueues(config.DEAD_LETTER_QUEUE).catch(() => undefined);
    await db.end();
  });

  it('requeues the bad message, reports not ready, keeps ingesting, and dead-letters it once the queue accepts', async () => {
    const producer = await publisher(config.INCOMING_QUEUE);
    await producer.publish('not json', { messageId: 'refused' });
    await producer.publish('{"id": 1, "value": 43.03}', { messageId: 'after-refused' });
    await producer.close();
    await waitFor('the good row', async () =>
      (await rowsWithValue(db, '43.03')).length === 1 ? true : undefined,
    );
    await waitFor('the requeue counted', async () =>
      (await appMetric(app, 'balance_sync_messages_requeued_total{reason="dead_letter_refused"}')) > 0
        ? true
        : undefined,
    );
    const notReady = await appReadiness(app);
    expect(notReady.status).toBe(503);
    expect(notReady.checks.deadLetterQueue).toBe(false);

    // The operator makes room: the message, still on the incoming queue, is dead-lettered.
    await admin.deleteQueue(config.DEAD_LETTER_QUEUE);
    await admin.assertQueue(config.DEAD_LETTER_QUEUE, { durable: true });
    const dead = await waitFor(
      'the dead letter',
      async () => (await admin.get(config.DEAD_LETTER_QUEUE)) || undefined,
    );
    expect(dead.content.toString()).toBe('not json');
    expect(dead.properties.messageId).toBe('refused');
    expect(dead.properties.headers?.[REASON_CODE_HEADER]).toBe('invalid_json');
    await waitFor('ready again', async () => ((await appReadiness(app)).status === 200 ? true : undefined));
    expect((await admin.checkQueue(config.INCOMING_QUEUE)).messageCount).toBe(0);
  });
});
