import { createHash } from 'node:crypto';
import type pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { App } from '../../src/app.js';
import type { Config } from '../../src/config.js';
import { NativeConnection } from '@temporalio/worker';
import { inject } from 'vitest';
import { createActivities, type RecordTransactionInput } from '../../src/activities/index.js';
import { REASON_CODE_HEADER, REASON_HEADER } from '../../src/bridge/dead-letter.js';
import { createMetrics } from '../../src/metrics.js';
import { readIngestRun } from '../../src/ingest-run-input.js';
import { createWorker } from '../../src/worker.js';
import {
  closeBridgeConnections,
  deleteQueues,
  drainQueue,
  pool,
  publisher,
  resetDatabase,
  rows,
  startTestApp,
  stopTestApp,
  testConfig,
  waitFor,
  type Publisher,
} from '../support/harness.js';

describe('ingest: RabbitMQ → IngestTransaction → historical_transactions', () => {
  let db: pg.Pool;
  let config: Config;
  let app: App;
  let queue: Publisher;

  beforeAll(async () => {
    db = pool();
    await resetDatabase(db);
    config = testConfig();
    app = await startTestApp(config);
    queue = await publisher(config.INCOMING_QUEUE);
  });

  afterAll(async () => {
    await queue.close();
    await stopTestApp(app, config);
    await db.end();
  });

  beforeEach(async () => {
    await drainQueue(config.DEAD_LETTER_QUEUE);
  });

  const transactionsAfter = async (id: number) =>
    rows(
      db,
      'SELECT provider_id, transaction_value::text AS value FROM historical_transactions WHERE id > $1 ORDER BY id',
      [id],
    );
  const maxId = async () =>
    Number((await rows(db, 'SELECT coalesce(max(id), 0) AS id FROM historical_transactions'))[0]!.id);

  it('writes row (1, 600) through a completed IngestTransaction for {"id": 1, "value": 600}', async () => {
    const before = await maxId();
    await queue.publish('{"id": 1, "value": 600}', { messageId: 'task-example' });
    const [row] = await waitFor('the row', async () => {
      const found = await transactionsAfter(before);
      return found.length > 0 ? found : undefined;
    });
    expect(row).toEqual({ provider_id: 1, value: '600' });
    const handle = app.client.workflow.getHandle('ingest-task-example');
    expect(await handle.result()).toMatchObject({ inserted: true });
    const description = await handle.describe();
    expect(description.type).toBe('IngestTransaction');
    expect(description.status.name).toBe('COMPLETED');
    // The fingerprint a reused message_id is checked against travels in the input, not a memo.
    expect(description.memo ?? {}).toEqual({});
    expect((await readIngestRun(app.client, 'ingest-task-example')).input).toMatchObject({
      providerId: 1,
      value: '600',
      bodySha256: createHash('sha256').update('{"id": 1, "value": 600}').digest('hex'),
    });
  });

  it('writes one row when the same message_id is delivered twice', async () => {
    const before = await maxId();
    await queue.publish('{"id": 2, "value": 5}', { messageId: 'twice' });
    await queue.publish('{"id": 2, "value": 5}', { messageId: 'twice' });
    await queue.publish('{"id": 2, "value": 7}', { messageId: 'marker-after-twice' });
    await waitFor('the marker row', async () =>
      (await transactionsAfter(before)).some((r) => r.value === '7') ? true : undefined,
    );
    // Both deliveries of "twice" were acked (nothing left on the queue) yet only one row exists.
    await waitFor('queue drained', async () =>
      (await drainQueue(config.INCOMING_QUEUE)).length === 0 ? true : undefined,
    );
    expect((await transactionsAfter(before)).filter((r) => r.value === '5')).toHaveLength(1);
  });

  it('writes one row when the insert activity fails after its commit and is retried', async () => {
    const before = await maxId();
    const real = createActivities({ pool: db, keydb: undefined as never, metrics: createMetrics() });
    let attempts = 0;
    const flaky = {
      ...real,
      async recordTransaction(input: RecordTransactionInput) {
        const result = await real.recordTransaction(input);
        if (++attempts === 1) throw new Error('simulated timeout after the commit');
        return result;
      },
    };
    const taskQueue = `${config.TEMPORAL_TASK_QUEUE}-flaky`;
    const connection = await NativeConnection.connect({ address: inject('temporalAddress') });
    const worker = await createWorker({
      connection,
      namespace: inject('temporalNamespace'),
      taskQueue,
      activities: flaky,
      workflowBundlePath: inject('workflowBundlePath'),
    });
    const result = await worker.runUntil(
      app.client.workflow.execute('IngestTransaction', {
        taskQueue,
        workflowId: `ingest-retry-after-commit-${before}`,
        args: [{ providerId: 1, value: '77.7' }],
      }),
    );
    await connection.close();
    expect(attempts).toBe(2);
    expect(result).toMatchObject({ inserted: false });
    expect(await transactionsAfter(before)).toEqual([{ provider_id: 1, value: '77.7' }]);
  });

  it('keeps decimal values such as 12.34 exact', async () => {
    const before = await maxId();
    await queue.publish('{"id": 1, "value": 12.34}');
    await queue.publish('{"id": 2, "value": -0.000000000000000001}');
    await queue.publish('{"id": 1, "value": 12345678901234567890.123456789}');
    const found = await waitFor('three rows', async () => {
      const r = await transactionsAfter(before);
      return r.length === 3 ? r : undefined;
    });
    expect(found.map((r) => r.value).sort()).toEqual(
      ['-0.000000000000000001', '12.34', '12345678901234567890.123456789'].sort(),
    );
  });

  it.each([
    ['invalid JSON', 'not json', {}, 'invalid_json'],
    ['an empty body', '', {}, 'invalid_json'],
    ['a JSON array', '[1, 600]', {}, 'not_an_object'],
    ['a string value', '{"id": 1, "value": "600"}', {}, 'invalid_value'],
    ['a missing field', '{"id": 1}', {}, 'missing_field'],
    ['an unknown provider', '{"id": 999, "value": 1}', {}, 'unknown_provider'],
    ['an oversize body', `{"id": 1, "value": 1, "pad": "${'x'.repeat(70_000)}"}`, {}, 'oversize'],
    ['non-UTF-8 bytes', Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), {}, 'not_utf8'],
    ['a wrong content-type', '{"id": 1, "value": 1}', { contentType: 'application/xml' }, 'content_type'],
  ] as const)('dead-letters %s with its reason and writes nothing', async (name, body, properties, code) => {
    const tag = name.replace(/\W+/g, '-');
    const before = await maxId();
    const original = typeof body === 'string' ? Buffer.from(body) : body;
    await queue.publish(original, { ...properties, messageId: `bad-${tag}` });
    await queue.publish('{"id": 1, "value": 1.5}', { messageId: `after-bad-${tag}` });
    await waitFor('the next good message', async () =>
      (await transactionsAfter(before)).length > 0 ? true : undefined,
    );
    const dead = await waitFor('the dead letter', async () => {
      const messages = await drainQueue(config.DEAD_LETTER_QUEUE);
      return messages.length > 0 ? messages : undefined;
    });
    expect(dead).toHaveLength(1);
    expect(dead[0]!.content.equals(original)).toBe(true);
    expect(dead[0]!.properties.headers?.[REASON_CODE_HEADER]).toBe(code);
    expect(String(dead[0]!.properties.headers?.[REASON_HEADER])).not.toBe('');
    expect(dead[0]!.properties.messageId).toBe(`bad-${tag}`);
    expect(await transactionsAfter(before)).toEqual([{ provider_id: 1, value: '1.5' }]);
  });

  it('re-creates a deleted dead-letter queue instead of losing the dead letter', async () => {
    await deleteQueues(config.DEAD_LETTER_QUEUE);
    const before = await maxId();
    await queue.publish('not json', { messageId: 'bad-after-dlq-deleted' });
    await queue.publish('{"id": 1, "value": 2.5}', { messageId: 'after-dlq-deleted' });
    await waitFor('the next good message', async () =>
      (await transactionsAfter(before)).length > 0 ? true : undefined,
    );
    const dead = await waitFor('the dead letter', async () => {
      const messages = await drainQueue(config.DEAD_LETTER_QUEUE);
      return messages.length > 0 ? messages : undefined;
    });
    expect(dead.map((message) => message.properties.messageId)).toEqual(['bad-after-dlq-deleted']);
  });

  it('processes every message exactly once when RabbitMQ force-closes the connection mid-stream', async () => {
    const before = await maxId();
    const count = 300;
    const published = (async () => {
      for (let i = 0; i < count; i++) {
        await queue.publish(JSON.stringify({ id: 1 + (i % 2), value: i }), { messageId: `reconnect-${i}` });
      }
    })();
    await waitFor('some rows', async () =>
      (await transactionsAfter(before)).length >= 20 ? true : undefined,
    );
    const closed = await closeBridgeConnections(config.TEMPORAL_TASK_QUEUE);
    await published;
    const ledger = async () =>
      rows(
        db,
        `SELECT ingest_key FROM balance_sync_ingest_ledger WHERE ingest_key LIKE 'ingest-reconnect-%'`,
      );
    expect(closed).toBeGreaterThan(0);
    // 300 starts and inserts: 8 s on a quiet machine, over 60 s beside CI's other suites on two cores.
    await waitFor('all rows', async () => ((await ledger()).length === count ? true : undefined), 120_000);
    const written = await transactionsAfter(before);
    expect(written).toHaveLength(count);
    expect(new Set(written.map((r) => r.value)).size).toBe(count);
  }, 180_000);
});
