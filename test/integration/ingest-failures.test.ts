import { NativeConnection } from '@temporalio/worker';
import amqplib, { type Channel, type ChannelModel } from 'amqplib';
import { createHash } from 'node:crypto';
import type pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { createActivities } from '../../src/activities/index.js';
import type { App } from '../../src/app.js';
import { startBridge, type BridgeOptions } from '../../src/bridge/bridge.js';
import { REASON_CODE_HEADER, REASON_HEADER } from '../../src/bridge/dead-letter.js';
import { ProviderDirectory } from '../../src/bridge/provider-directory.js';
import type { Config } from '../../src/config.js';
import { createMetrics, type AppMetrics } from '../../src/metrics.js';
import { connectToRabbitmq } from '../../src/rabbitmq/connection.js';
import { WORKFLOW_ID_HEADER } from '../../src/rabbitmq/dead-letters.js';
import { replayDeadLetters } from '../../src/ops/dlq-replay.js';
import { createWorker } from '../../src/worker.js';
import {
  deleteQueues,
  drainQueue,
  pool,
  publisher,
  RABBITMQ_URL,
  resetDatabase,
  rows,
  startTestApp,
  stopTestApp,
  testConfig,
  waitFor,
} from '../support/harness.js';

/** A provider directory whose `has` first runs `fault` (which may throw), for injecting failures. */
class FaultyDirectory extends ProviderDirectory {
  constructor(
    db: pg.Pool,
    private readonly fault: (providerId: number) => boolean | undefined,
  ) {
    super(db);
  }
  override async has(providerId: number): Promise<boolean> {
    const answer = this.fault(providerId);
    return answer ?? (await super.has(providerId));
  }
}

/** Producer headers JSON cannot carry as they are: a table, an array, a byte array, nested. */
const NON_SCALAR_HEADERS = {
  'x-table': { a: 1, nested: { b: 'c' } },
  'x-list': [1, 'two', { three: 3 }],
  'x-bytes': Buffer.from([0, 255, 7]),
};

const sha256 = (body: string) => createHash('sha256').update(body).digest('hex');
const total = async (counter: { get(): Promise<{ values: { value: number }[] }> }) =>
  (await counter.get()).values.reduce((sum, { value }) => sum + value, 0);
const sample = async (metrics: AppMetrics, name: keyof AppMetrics, labels: Record<string, string>) => {
  const metric = metrics[name] as unknown as {
    get(): Promise<{ values: { value: number; labels: Record<string, string> }[] }>;
  };
  const found = (await metric.get()).values.find((v) =>
    Object.entries(labels).every(([key, value]) => v.labels[key] === value),
  );
  return found?.value ?? 0;
};

describe('ingest failures: nothing stays unacked, nothing is dropped after the ack', () => {
  let db: pg.Pool;
  let config: Config;
  let app: App;
  let amqp: ChannelModel;
  let channel: Channel;
  const stops: (() => Promise<void>)[] = [];

  /** A second bridge in this process, on its own queue, feeding the app's worker (and its dead letters). */
  function testBridge(name: string, providers: ProviderDirectory, overrides: Partial<BridgeOptions> = {}) {
    const metrics = createMetrics();
    const lines: { msg: string; [key: string]: unknown }[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const connection = connectToRabbitmq(
      RABBITMQ_URL,
      `test bridge ${name}`,
      log,
      config.RABBITMQ_HEARTBEAT_SECONDS,
    );
    const queue = `${config.INCOMING_QUEUE}.${name}`;
    const bridge = startBridge(
      {
        incomingQueue: queue,
        deadLetterQueue: `${queue}.dead`,
        prefetch: 8,
        maxMessageBytes: 65536,
        taskQueue: config.TEMPORAL_TASK_QUEUE,
        eagerStart: false,
        maxInFlight: 0,
        summaryIntervalMs: 0,
        ...overrides,
      },
      { connection, client: app.client, providers, metrics, log },
    );
    stops.push(async () => {
      await bridge.stop();
      await connection.close();
      await deleteQueues(queue, `${queue}.dead`);
    });
    return { queue, deadLetterQueue: `${queue}.dead`, metrics, lines, bridge };
  }

  const rowsWithValue = (value: string) =>
    rows(db, 'SELECT id FROM historical_transactions WHERE transaction_value = $1::numeric', [value]);
  const appDeadLetter = () =>
    waitFor('a dead letter from the workflow', async () => {
      const message = await channel.get(config.DEAD_LETTER_QUEUE, { noAck: true });
      return message || undefined;
    });
  /** The run's final status, once it has ended. */
  const statusOf = async (workflowId: string) => {
    const handle = app.client.workflow.getHandle(workflowId);
    await handle.result().catch(() => undefined);
    return (await handle.describe()).status.name;
  };

  beforeAll(async () => {
    db = pool();
    await resetDatabase(db);
    await db.query(`INSERT INTO initial_data (id, provider_name, initial_value) VALUES (3, 'Amex', 0)`);
    config = testConfig();
    app = await startTestApp(config);
    amqp = await amqplib.connect(RABBITMQ_URL);
    channel = await amqp.createChannel();
  });

  afterAll(async () => {
    for (const stop of stops) await stop();
    await amqp.close();
    await stopTestApp(app, config);
    await db.end();
  });

  beforeEach(async () => {
    await drainQueue(config.DEAD_LETTER_QUEUE);
  });

  it('requeues a message after an unexpected TypeError, ingests it on redelivery, dead-letters a poison one as processing_error', async () => {
    const calls = new Map<number, number>();
    const providers = new FaultyDirectory(db, (providerId) => {
      const call = (calls.get(providerId) ?? 0) + 1;
      calls.set(providerId, call);
      // Provider 2: fails every attempt of the first delivery only. Provider 3: always fails.
      if ((providerId === 2 && call <= 3) || providerId === 3) {
        throw new TypeError("Cannot read properties of undefined (reading 'has')");
      }
      return undefined;
    });
    const { queue, deadLetterQueue, metrics, lines } = testBridge('faulty', providers, {
      summaryIntervalMs: 300,
    });
    const producer = await publisher(queue);
    await producer.publish('{"id": 2, "value": 51.01}', { messageId: 'type-error-once' });
    await producer.publish('{"id": 3, "value": 51.02}', { messageId: 'type-error-always' });
    await producer.publish('{"id": 1, "value": 51.03}', { messageId: 'no-fault' });
    await producer.close();

    await waitFor('both good rows', async () =>
      (await rowsWithValue('51.01')).length === 1 && (await rowsWithValue('51.03')).length === 1
        ? true
        : undefined,
    );
    const [poison] = await waitFor('the poison message dead-lettered', async () => {
      const found = await drainQueue(deadLetterQueue);
      return found.length > 0 ? found : undefined;
    });
    expect(poison!.content.toString()).toBe('{"id": 3, "value": 51.02}');
    expect(poison!.properties.headers?.[REASON_CODE_HEADER]).toBe('processing_error');
    expect(String(poison!.properties.headers?.[REASON_HEADER])).toContain("reading 'has'");
    expect(await rowsWithValue('51.02')).toHaveLength(0);
    expect(await sample(metrics, 'messagesRequeued', { reason: 'processing_error' })).toBe(2);
    expect((await channel.checkQueue(queue)).messageCount).toBe(0);
    const summary = await waitFor('an ingest summary with the requeues', () =>
      Promise.resolve(lines.find((line) => line.msg === 'ingest summary' && (line.requeued as number) > 0)),
    );
    expect(summary).toMatchObject({ requeuedByReason: { processing_error: expect.any(Number) } });
    expect(await total(metrics.messagesAcked)).toBe(2);
  });

  it('dead-letters the original message, every header kept, from the workflow when its provider vanished after the check; replaying two copies records one row', async () => {
    // The bridge's check passes, the insert fails on the foreign key: a failure after the ack.
    const { queue, metrics: bridgeMetrics } = testBridge('vanished', new FaultyDirectory(db, () => true));
    const producer = await publisher(queue);
    const body = '{"id": 999, "value": 52.5}';
    await producer.publish(body, {
      messageId: 'vanished-provider',
      contentType: 'application/json',
      headers: { 'x-trace': 't-1', ...NON_SCALAR_HEADERS },
    });
    const dead = await appDeadLetter();
    expect(dead.content.toString()).toBe(body);
    expect(dead.properties.messageId).toBe('vanished-provider');
    expect(dead.properties.contentType).toBe('application/json');
    expect(dead.properties.headers).toMatchObject({
      'x-trace': 't-1',
      [REASON_CODE_HEADER]: 'unknown_provider',
      [WORKFLOW_ID_HEADER]: 'ingest-vanished-provider',
    });
    for (const [key, value] of Object.entries(NON_SCALAR_HEADERS))
      expect(dead.properties.headers?.[key], key).toEqual(value);
    expect(await statusOf('ingest-vanished-provider')).toBe('FAILED');

    // Without a message_id the dead letter names its workflow, so a second copy is recognisable.
    await producer.publish('{"id": 998, "value": 52.6}');
    const anonymous = await appDeadLetter();
    expect(anonymous.properties.messageId).toBeUndefined();
    expect(String(anonymous.properties.headers?.[WORKFLOW_ID_HEADER])).toMatch(/^ingest-anon-/);

    // Once the provider exists, the replayed dead letter (same message_id) is recorded.
    await db.query(`INSERT INTO initial_data (id, provider_name, initial_value) VALUES (999, 'Late', 0)`);
    await producer.publish(dead.content, { messageId: 'vanished-provider' });
    await producer.close();
    await waitFor('the replayed row', async () =>
      (await rowsWithValue('52.5')).length === 1 ? true : undefined,
    );

    // Two copies of the anonymous dead letter (a retried publish), replayed: one row, their workflow's.
    await db.query(`INSERT INTO initial_data (id, provider_name, initial_value) VALUES (998, 'Later', 0)`);
    const dlq = await publisher(config.DEAD_LETTER_QUEUE);
    const copy = [
      anonymous.content,
      { headers: anonymous.properties.headers as Record<string, unknown> },
    ] as const;
    await dlq.publishMany([copy, copy]);
    await dlq.close();
    const replayed = await replayDeadLetters({
      rabbitmqUrl: RABBITMQ_URL,
      from: config.DEAD_LETTER_QUEUE,
      to: queue,
      dryRun: false,
    });
    expect(replayed.moved).toBe(2);
    await waitFor('the replayed anonymous row', async () =>
      (await rowsWithValue('52.6')).length === 1 ? true : undefined,
    );
    await waitFor('both copies acked', async () =>
      (await channel.checkQueue(queue)).messageCount === 0 &&
      (await sample(bridgeMetrics, 'messagesAcked', { outcome: 'existing' })) >= 1
        ? true
        : undefined,
    );
    expect(await rowsWithValue('52.6')).toHaveLength(1);
  });

  it('dead-letters a reused message_id with a different body as message_id_conflict (Temporal still has the run)', async () => {
    const producer = await publisher(config.INCOMING_QUEUE);
    await producer.publish('{"id": 1, "value": 53.1}', { messageId: 'reused' });
    await waitFor('the first row', async () =>
      (await rowsWithValue('53.1')).length === 1 ? true : undefined,
    );
    await producer.publish('{"id": 1, "value": 53.1}', { messageId: 'reused' }); // the same message again
    await producer.publish('{"id": 1, "value": 53.2}', { messageId: 'reused' }); // another body
    await producer.close();
    const dead = await appDeadLetter();
    expect(dead.content.toString()).toBe('{"id": 1, "value": 53.2}');
    expect(dead.properties.headers?.[REASON_CODE_HEADER]).toBe('message_id_conflict');
    expect(await drainQueue(config.DEAD_LETTER_QUEUE)).toHaveLength(0);
    expect(await rowsWithValue('53.1')).toHaveLength(1);
    expect(await rowsWithValue('53.2')).toHaveLength(0);
  });

  it('dead-letters a reused message_id with a different body as message_id_conflict (after retention: the ledger)', async () => {
    // Ledger entries whose workflows are gone, as after Temporal's retention.
    const [seed] = await rows(db, 'SELECT min(id) AS id FROM historical_transactions');
    for (const [key, body] of [
      ['ingest-expired', '{"id": 1, "value": 54.1}'],
      ['ingest-expired-same', '{"id": 1, "value": 54.3}'],
    ]) {
      await db.query(
        'INSERT INTO balance_sync_ingest_ledger (ingest_key, transaction_id, body_sha256) VALUES ($1, $2, $3)',
        [key, seed!.id, sha256(body!)],
      );
    }
    const producer = await publisher(config.INCOMING_QUEUE);
    await producer.publish('{"id": 1, "value": 54.2}', { messageId: 'expired' });
    await producer.publish('{"id": 1, "value": 54.3}', { messageId: 'expired-same' });
    await producer.close();
    const dead = await appDeadLetter();
    expect(dead.content.toString()).toBe('{"id": 1, "value": 54.2}');
    expect(dead.properties.headers?.[REASON_CODE_HEADER]).toBe('message_id_conflict');
    expect(await statusOf('ingest-expired')).toBe('FAILED');
    const same = await app.client.workflow.getHandle('ingest-expired-same').result();
    expect(same).toMatchObject({ inserted: false });
    expect(await drainQueue(config.DEAD_LETTER_QUEUE)).toHaveLength(0);
    expect(await rowsWithValue('54.2')).toHaveLength(0);
    expect(await rowsWithValue('54.3')).toHaveLength(0);
  });

  it('starts nothing while BRIDGE_MAX_IN_FLIGHT workflows are unfinished: the rest waits in RabbitMQ', async () => {
    const taskQueue = `${config.TEMPORAL_TASK_QUEUE}-throttled`; // no worker polls it yet
    const maxInFlight = 3;
    const prefetch = 2;
    const { queue, metrics, lines } = testBridge('throttled', new ProviderDirectory(db), {
      taskQueue,
      prefetch,
      maxInFlight,
      throttlePollMs: 100,
    });
    const producer = await publisher(queue);
    const count = 20;
    await producer.publishMany(
      Array.from(
        { length: count },
        (_, i) => [`{"id": 1, "value": 55.${100 + i}}`, { messageId: `throttled-${i}` }] as const,
      ),
    );
    await producer.close();
    await waitFor('the throttle closed', async () =>
      (await total(metrics.bridgeThrottled)) === 1 ? true : undefined,
    );
    await waitFor('a count that saw the unfinished runs', async () =>
      (await total(metrics.ingestWorkflowsRunning)) >= maxInFlight ? true : undefined,
    );
    const started = await sample(metrics, 'messagesAcked', { outcome: 'started' });
    expect(started).toBeGreaterThanOrEqual(maxInFlight);
    expect(started).toBeLessThanOrEqual(maxInFlight + prefetch);
    expect((await channel.checkQueue(queue)).messageCount).toBeGreaterThanOrEqual(count - started - prefetch);

    // A worker drains the task queue; the throttle opens and every message is ingested.
    const connection = await NativeConnection.connect({ address: inject('temporalAddress') });
    const worker = await createWorker({
      connection,
      namespace: inject('temporalNamespace'),
      taskQueue,
      activities: createActivities({ pool: db, keydb: undefined as never, metrics: createMetrics() }),
      workflowBundlePath: inject('workflowBundlePath'),
    });
    await worker.runUntil(
      waitFor('every row', async () => {
        const { rows: found } = await db.query(
          `SELECT count(*)::int AS n FROM balance_sync_ingest_ledger WHERE ingest_key LIKE 'ingest-throttled-%'`,
        );
        return found[0].n === count ? true : undefined;
      }),
    );
    await connection.close();
    await waitFor('the throttle open', async () =>
      (await total(metrics.bridgeThrottled)) === 0 ? true : undefined,
    );
    expect(lines.map((line) => line.msg)).toEqual(
      expect.arrayContaining([
        'throttling: BRIDGE_MAX_IN_FLIGHT ingest workflows unfinished',
        'throttle released: ingest workflows finishing',
      ]),
    );
  });
});
