// The no-Temporal reference: amqplib -> the same validation -> the same idempotent INSERT -> ack.
import amqplib from 'amqplib';
import pg from 'pg';
import { createRecordTransaction } from '../../src/activities/record-transaction.js';
import { parseTransaction } from '../../src/bridge/parse-transaction.js';
import { ProviderDirectory } from '../../src/bridge/provider-directory.js';
import { createMetrics } from '../../src/metrics.js';
import { RABBITMQ_URL } from './services.js';
import { progress, within } from './util.js';

/** Consumes `count` messages from `queue` with `prefetch`, one INSERT each, acking after the commit. */
export async function baselineDrain(
  queue: string,
  databaseUrl: string,
  count: number,
  prefetch: number,
  timeoutMs: number,
): Promise<{ seconds: number }> {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 10 });
  pool.on('error', (error) => progress(`idle Postgres client failed: ${error.message}`));
  const record = createRecordTransaction(pool, createMetrics());
  const providers = new ProviderDirectory(pool);
  const connection = await amqplib.connect(RABBITMQ_URL);
  const channel = await connection.createChannel();
  await channel.assertQueue(queue, { durable: true });
  await channel.prefetch(prefetch);
  let handled = 0;
  let started = 0;
  try {
    await within(
      new Promise<void>((resolve, reject) => {
        void channel.consume(queue, (message) => {
          if (!message) return;
          if (started === 0) started = performance.now();
          void (async () => {
            const parsed = parseTransaction(
              {
                body: message.content,
                contentType: message.properties.contentType as string | undefined,
                contentEncoding: message.properties.contentEncoding as string | undefined,
              },
              65536,
            );
            if (!parsed.ok || !(await providers.has(parsed.transaction.providerId))) {
              throw new Error('bench message rejected');
            }
            await record({
              ingestKey: `ingest-${message.properties.messageId as string}`,
              providerId: parsed.transaction.providerId,
              value: parsed.transaction.value,
            });
            channel.ack(message);
            if (++handled === count) resolve();
          })().catch(reject);
        });
      }),
      timeoutMs,
      `baseline drain of ${count} messages`,
    );
    return { seconds: (performance.now() - started) / 1000 };
  } finally {
    await connection.close();
    await pool.end();
  }
}
