import amqplib from 'amqplib';
import type pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../../src/app.js';
import type { Config } from '../../src/config.js';
import { connectToRabbitmq } from '../../src/rabbitmq/connection.js';
import { createConfirmedPublisher, MessageReturnedError } from '../../src/rabbitmq/dead-letters.js';
import { startThrowawayRabbitmq } from '../support/throwaway-services.js';
import {
  appMetric,
  pool,
  resetDatabase,
  startTestApp,
  stopTestApp,
  testConfig,
  waitFor,
} from '../support/harness.js';

type Rabbitmq = Awaited<ReturnType<typeof startThrowawayRabbitmq>>;
type LogLine = Record<string, unknown> & { msg: string };

const BAD = ['not json 1', 'not json 2', 'not json 3'];
const REFUSED = 'balance_sync_messages_requeued_total{reason="dead_letter_refused"}';
const DEAD_LETTERED = 'balance_sync_messages_dead_lettered_total{code="invalid_json"}';

/** A pino logger whose warn (and worse) lines land in `lines`. */
function capturingLog(lines: LogLine[]) {
  return pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as LogLine) });
}

/** Messages on each queue of the throw-away node (ready plus unacked), by name; absent queues absent. */
async function queueDepths(rabbitmq: Rabbitmq): Promise<Map<string, number>> {
  const listing = await rabbitmq.ctl('list_queues', '--no-table-headers', 'name', 'messages');
  return new Map(
    listing
      .split('\n')
      .filter((line) => line.includes('\t'))
      .map((line) => {
        const [name, count] = line.split('\t');
        return [name!, Number(count)] as const;
      }),
  );
}

async function publishBad(url: string, queue: string) {
  const connection = await amqplib.connect(url);
  const channel = await connection.createConfirmChannel();
  await channel.assertQueue(queue, { durable: true });
  for (const body of BAD) channel.sendToQueue(queue, Buffer.from(body), { persistent: true });
  await channel.waitForConfirms();
  await connection.close();
}

async function readyz(app: App) {
  const response = await fetch(`http://127.0.0.1:${app.httpPort}/readyz`);
  const body = (await response.json()) as {
    checks?: Record<string, boolean>;
    reasons?: Record<string, string>;
  };
  return { status: response.status, checks: body.checks ?? {}, reasons: body.reasons ?? {} };
}

const escapeRegex = (text: string) => text.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&');

/** On a RabbitMQ node of its own: users, permissions and queue arguments of the shared broker are never touched. */
describe('a dead letter is acked only once the broker has kept it', () => {
  let rabbitmq: Rabbitmq;
  let db: pg.Pool;
  const apps: [App, Config][] = [];

  beforeAll(async () => {
    rabbitmq = await startThrowawayRabbitmq();
    db = pool();
    await resetDatabase(db);
  }, 120_000);

  afterAll(async () => {
    for (const [app, config] of apps) await stopTestApp(app, config); // its schedules
    await rabbitmq?.stop();
    await db?.end();
  });

  /** A user who may declare only `queues` (configure), and write and read anything. */
  async function limitedUser(name: string, queues: string[]): Promise<string> {
    await rabbitmq.ctl('add_user', name, 'secret');
    const configure = `^(${queues.map(escapeRegex).join('|')})$`;
    await rabbitmq.ctl('set_permissions', '-p', '/', name, configure, '.*', '.*');
    return rabbitmq.url.replace('guest:guest', `${name}:secret`);
  }

  it('keeps 3 bad messages on the incoming queue while the dead-letter queue is missing and ours to declare is refused, says why, and dead-letters them once it exists', async () => {
    const config = testConfig({ RABBITMQ_URL: rabbitmq.url });
    const url = await limitedUser('no-dlq-rights', [config.INCOMING_QUEUE]);
    await publishBad(rabbitmq.url, config.INCOMING_QUEUE);
    const lines: LogLine[] = [];
    const app = await startTestApp({ ...config, RABBITMQ_URL: url }, capturingLog(lines));
    apps.push([app, config]);

    // Each is returned (NO_ROUTE) instead of confirmed and dropped: requeued, none acked.
    await waitFor('3 refused dead letters requeued', async () =>
      (await appMetric(app, REFUSED)) >= BAD.length ? true : undefined,
    );
    expect(await appMetric(app, DEAD_LETTERED)).toBe(0);
    const depths = await queueDepths(rabbitmq);
    expect(depths.get(config.INCOMING_QUEUE)).toBe(BAD.length);
    expect(depths.has(config.DEAD_LETTER_QUEUE)).toBe(false);
    const ready = await readyz(app);
    expect(ready.status).toBe(503);
    expect(ready.checks.deadLetterQueue).toBe(false);
    expect(ready.reasons.deadLetterQueue).toContain(`no queue ${config.DEAD_LETTER_QUEUE}`);
    expect(ready.reasons.deadLetterQueue).toContain('312 NO_ROUTE');
    expect(ready.reasons.deadLetterQueue).toContain('ACCESS_REFUSED');
    // Loud: the refused declaration, and each requeue, name the queue and the cause.
    const refusedDeclaration = lines.find((line) => line.msg.startsWith('cannot declare the queue'));
    expect(refusedDeclaration).toMatchObject({ level: 40, queue: config.DEAD_LETTER_QUEUE });
    expect(refusedDeclaration?.err).toContain('ACCESS_REFUSED');
    const requeued = lines.find((line) => line.msg === 'message requeued');
    expect(requeued).toMatchObject({ level: 40, reason: 'dead_letter_refused' });
    expect(requeued?.err).toContain(`312 NO_ROUTE): no queue ${config.DEAD_LETTER_QUEUE}`);
    expect(lines.some((line) => line.msg === 'message dead-lettered')).toBe(false);

    // The operator declares it: the three move there, each once, and the app is ready again.
    const admin = await amqplib.connect(rabbitmq.url);
    await (await admin.createChannel()).assertQueue(config.DEAD_LETTER_QUEUE, { durable: true });
    await admin.close();
    await waitFor(
      'the 3 dead letters',
      async () => ((await appMetric(app, DEAD_LETTERED)) === BAD.length ? true : undefined),
      30_000,
    );
    await waitFor('ready again', async () => ((await readyz(app)).status === 200 ? true : undefined));
    const after = await queueDepths(rabbitmq);
    expect(after.get(config.DEAD_LETTER_QUEUE)).toBe(BAD.length);
    expect(after.get(config.INCOMING_QUEUE)).toBe(0);
  }, 120_000);

  it('with the dead-letter queue capped at 1 (reject-publish) and 3 bad messages: 1 dead-lettered, 2 kept on the incoming queue, none lost', async () => {
    const config = testConfig({ RABBITMQ_URL: rabbitmq.url });
    const admin = await amqplib.connect(rabbitmq.url);
    await (
      await admin.createChannel()
    ).assertQueue(config.DEAD_LETTER_QUEUE, {
      durable: true,
      arguments: { 'x-max-length': 1, 'x-overflow': 'reject-publish' },
    });
    await admin.close();
    await publishBad(rabbitmq.url, config.INCOMING_QUEUE);
    const lines: LogLine[] = [];
    const app = await startTestApp(config, capturingLog(lines));
    apps.push([app, config]);

    await waitFor('2 nacked dead letters requeued', async () =>
      (await appMetric(app, REFUSED)) >= 2 ? true : undefined,
    );
    expect(await appMetric(app, DEAD_LETTERED)).toBe(1);
    const depths = await queueDepths(rabbitmq);
    expect(depths.get(config.DEAD_LETTER_QUEUE)).toBe(1);
    expect(depths.get(config.INCOMING_QUEUE)).toBe(2);
    expect((await readyz(app)).checks.deadLetterQueue).toBe(false);
    // reject-publish tells the publisher: nothing to warn of at start.
    expect(lines.some((line) => line.msg.startsWith('this queue can delete messages'))).toBe(false);
  }, 120_000);

  it('warns at start when the dead-letter queue is capped with drop-head or has a TTL', async () => {
    const queue = 'lossy.incoming_transactions.dead';
    const admin = await amqplib.connect(rabbitmq.url);
    await (
      await admin.createChannel()
    ).assertQueue(queue, {
      durable: true,
      arguments: { 'x-max-length': 1000, 'x-message-ttl': 86_400_000, 'x-expires': 3_600_000 },
    });
    await admin.close();
    const lines: LogLine[] = [];
    const log = capturingLog(lines);
    const connection = connectToRabbitmq(rabbitmq.url, 'dead-letter-kept test', log, 5);
    const publisher = createConfirmedPublisher(connection, queue, { log });
    try {
      const warning = await waitFor('the warn line', () =>
        Promise.resolve(lines.find((line) => line.msg.startsWith('this queue can delete messages'))),
      );
      expect(warning).toMatchObject({
        level: 40,
        queue,
        losses: [
          'x-max-length=1000 with x-overflow drop-head',
          'x-message-ttl=86400000',
          'x-expires=3600000',
        ],
      });
    } finally {
      await publisher.close();
      await connection.close();
    }
  });

  it('rejects a publish after the ack (the workflow and sweep path) to a missing queue it may not declare', async () => {
    const queue = 'missing.incoming_transactions.dead';
    const url = await limitedUser('after-ack', ['nothing']);
    const log = capturingLog([]);
    const connection = connectToRabbitmq(url, 'dead-letter-kept test', log, 5);
    const publisher = createConfirmedPublisher(connection, queue, { log });
    try {
      const publishing = publisher.publish(Buffer.from('{"id": 1, "value": 1}'), { persistent: true });
      await expect(publishing).rejects.toThrow(MessageReturnedError);
      await expect(publishing).rejects.toThrow(
        /312 NO_ROUTE\): no queue missing\.incoming_transactions\.dead; cannot declare queue .*ACCESS_REFUSED/,
      );
      expect(publisher.accepting()).toBe(false);
      expect(publisher.refusal()).toContain(`publishing to ${queue}`);
    } finally {
      await publisher.close();
      await connection.close();
    }
  });
});
