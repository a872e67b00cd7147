import amqplib from 'amqplib';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../../src/app.js';
import { REASON_CODE_HEADER } from '../../src/bridge/dead-letter.js';
import type { Config } from '../../src/config.js';
import { startThrowawayRabbitmq } from '../support/throwaway-services.js';
import {
  drainQueue,
  pool,
  resetDatabase,
  rows,
  startTestApp,
  stopTestApp,
  testConfig,
  waitFor,
  appMetric,
  appReadiness,
} from '../support/harness.js';

type Rabbitmq = Awaited<ReturnType<typeof startThrowawayRabbitmq>>;

const GOOD = ['81.01', '81.02', '81.03', '81.04', '81.05'];
const DEFAULT_WATERMARK = '0.4';

/** On a RabbitMQ node of its own: the shared broker's watermark is never touched. */
describe('a RabbitMQ resource alarm (connection.blocked)', () => {
  let rabbitmq: Rabbitmq;
  let db: pg.Pool;
  let config: Config;
  let app: App;

  beforeAll(async () => {
    rabbitmq = await startThrowawayRabbitmq();
    db = pool();
    await resetDatabase(db);
    config = testConfig({ RABBITMQ_URL: rabbitmq.url });
  });

  afterAll(async () => {
    await rabbitmq?.ctl('set_vm_memory_high_watermark', DEFAULT_WATERMARK).catch(() => undefined);
    await stopTestApp(app, config); // its schedules; the queues live on the throw-away node
    await rabbitmq?.stop();
    await db.end();
  });

  it('says so within 30 s, keeps acking good messages, and dead-letters the bad one once the alarm clears', async () => {
    // A malformed message waits in the queue among good ones; then the alarm goes off.
    const producer = await amqplib.connect(rabbitmq.url);
    const channel = await producer.createConfirmChannel();
    await channel.assertQueue(config.INCOMING_QUEUE, { durable: true });
    channel.sendToQueue(config.INCOMING_QUEUE, Buffer.from('not json'), { persistent: true });
    for (const value of GOOD)
      channel.sendToQueue(config.INCOMING_QUEUE, Buffer.from(`{"id": 1, "value": ${value}}`), {
        persistent: true,
      });
    await channel.waitForConfirms();
    await producer.close();
    await rabbitmq.ctl('set_vm_memory_high_watermark', '0.00001');

    app = await startTestApp(config);
    const alarmAt = Date.now();
    await waitFor('the blocked gauge', async () =>
      (await appMetric(app, 'balance_sync_rabbitmq_blocked')) === 1 ? true : undefined,
    );
    const blocked = await appReadiness(app);
    expect(Date.now() - alarmAt).toBeLessThan(30_000);
    expect(blocked.status).toBe(503);
    expect(blocked.checks.rabbitmqUnblocked).toBe(false);
    // Acks are on the consuming connection, which the alarm does not block: the good ones land.
    await waitFor('the good rows during the alarm', async () =>
      (
        await rows(
          db,
          'SELECT 1 FROM historical_transactions WHERE transaction_value > 81 AND transaction_value < 82',
        )
      ).length === GOOD.length
        ? true
        : undefined,
    );
    // ...and RabbitMQ has their acks: at most the bad one is unacked.
    await waitFor('the acks on the broker', async () => {
      const listing = await rabbitmq.ctl(
        'list_queues',
        '--no-table-headers',
        'name',
        'messages_unacknowledged',
      );
      const line = listing.split('\n').find((l) => l.startsWith(`${config.INCOMING_QUEUE}\t`));
      return line && Number(line.split('\t')[1]) <= 1 ? true : undefined;
    });
    // The bad one's dead letter is not confirmed: requeued, not held.
    await waitFor(
      'a confirm timeout counted',
      async () =>
        (await appMetric(app, 'balance_sync_messages_requeued_total{reason="confirm_timeout"}')) > 0
          ? true
          : undefined,
      45_000,
    );

    await rabbitmq.ctl('set_vm_memory_high_watermark', DEFAULT_WATERMARK);
    await waitFor(
      'ready again',
      async () => ((await appReadiness(app)).status === 200 ? true : undefined),
      60_000,
    );
    const dead = await waitFor(
      'the dead letter',
      async () => {
        const messages = await drainQueue(config.DEAD_LETTER_QUEUE, rabbitmq.url);
        return messages.length > 0 ? messages : undefined;
      },
      60_000,
    );
    expect(dead[0]!.content.toString()).toBe('not json');
    expect(dead[0]!.properties.headers?.[REASON_CODE_HEADER]).toBe('invalid_json');
    expect(await appMetric(app, 'balance_sync_rabbitmq_blocked')).toBe(0);
    const recorded = await rows(
      db,
      'SELECT transaction_value::text AS value FROM historical_transactions WHERE transaction_value > 81 AND transaction_value < 82 ORDER BY 1',
    );
    expect(recorded.map((row) => row.value)).toEqual(GOOD);
  }, 240_000);
});
