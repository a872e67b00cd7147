import amqp, { type ChannelWrapper } from 'amqp-connection-manager';
import type { ConfirmChannel } from 'amqplib';
import { randomInt, randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import { BAD_KIND_HEADER, BAD_MESSAGES, isBadAt, randomAmount, transactionBody } from './messages.js';
import type { ProducerOptions } from './options.js';
import { ensureProducerTables, providerIds, type SchemaOutcome } from './schema.js';

export interface ProducerDeps {
  pool: pg.Pool;
  rabbitmqUrl: string;
  queue: string;
  /** One line of progress (the CLI writes it to stderr). */
  log: (line: string) => void;
  /** Aborting stops publishing; messages already sent are still awaited (up to 10 s). */
  signal?: AbortSignal;
}

export interface ProducerSummary {
  queue: string;
  schema: SchemaOutcome;
  /** Messages the broker confirmed. */
  published: number;
  /** Of those, deliberately malformed ones (bad-message mode). */
  bad: number;
  /** Messages the broker refused, or left unconfirmed at shutdown. */
  failed: number;
  seconds: number;
}

const MAX_UNCONFIRMED = 1000;
const HEARTBEAT_MS = 5000;
const DRAIN_ON_STOP_MS = 10_000;

/**
 * The demo producer: makes sure the original tables exist (seeding only new ones unless `reseed`),
 * then publishes transactions to `queue` as the original does: declared durable without
 * arguments, persistent messages, body {"id": <provider id>, "value": <amount>}.
 */
export async function runProducer(options: ProducerOptions, deps: ProducerDeps): Promise<ProducerSummary> {
  const { log, queue, signal } = deps;
  const started = performance.now();
  const schema = await ensureProducerTables(deps.pool, { reseed: options.reseed });
  if (schema.created.length > 0) {
    log(`created table(s) ${schema.created.join(', ')}${schema.seeded ? ' and inserted the seed rows' : ''}`);
  } else if (schema.seeded) {
    log('tables exist; inserted the seed rows again (--reseed, as the original producer does on each start)');
  } else {
    log('tables exist; seed rows not inserted again (pass --reseed for the original behaviour)');
  }
  const providers = await providerIds(deps.pool);
  if (providers.length === 0) throw new Error('initial_data has no providers to send transactions for');

  const summary: ProducerSummary = { queue, schema, published: 0, bad: 0, failed: 0, seconds: 0 };
  const finish = () => ({ ...summary, seconds: (performance.now() - started) / 1000 });
  if (options.count === 0) return finish();

  const connection = amqp.connect([deps.rabbitmqUrl], {
    heartbeatIntervalInSeconds: 5,
    reconnectTimeInSeconds: 1,
    connectionOptions: { clientProperties: { connection_name: 'balance-sync demo producer' } },
  });
  connection.on('connectFailed', ({ err }) => log(`cannot reach RabbitMQ (${err?.message}); retrying`));
  connection.on('disconnect', ({ err }) => log(`disconnected from RabbitMQ (${err?.message}); reconnecting`));
  const channel: ChannelWrapper = connection.createChannel({
    confirm: true,
    // Exactly the original's declaration: durable, no arguments.
    setup: (raw: ConfirmChannel) => raw.assertQueue(queue, { durable: true }).then(() => undefined),
  });
  channel.on('error', (err: Error) => log(`channel error: ${err.message}`));

  const timers: NodeJS.Timeout[] = [];
  const inFlight = new Set<Promise<void>>();
  try {
    await Promise.race([channel.waitForConnect(), aborted(signal)]);
    if (signal?.aborted) return finish();
    log(
      `publishing to ${queue}: ${options.rate ? `${options.rate} msg/s` : `one message every ${options.minDelaySeconds}-${options.maxDelaySeconds} s`}` +
        `${options.count === undefined ? '' : `, ${options.count} message(s)`}` +
        `${options.messageIds ? ', with message_id' : ''}` +
        `${options.badRatio > 0 ? `, ${options.badRatio * 100}% malformed` : ''}`,
    );

    if (options.heartbeatFile) {
      const path = options.heartbeatFile;
      const beat = () => {
        if (connection.isConnected()) writeFile(path, new Date().toISOString()).catch(() => undefined);
      };
      beat();
      timers.push(setInterval(beat, HEARTBEAT_MS).unref());
    }
    const progressEvery = options.rate !== undefined;
    let lastReport = { at: performance.now(), published: 0 };
    const report = () => {
      const now = performance.now();
      const rate = ((summary.published - lastReport.published) * 1000) / Math.max(1, now - lastReport.at);
      lastReport = { at: now, published: summary.published };
      const total = options.count === undefined ? '' : `/${options.count}`;
      log(
        `${summary.published}${total} confirmed (${rate.toFixed(1)} msg/s), ${summary.bad} malformed, ${summary.failed} failed`,
      );
    };
    if (progressEvery) timers.push(setInterval(report, options.progressSeconds * 1000).unref());

    let badKind = 0;
    const firstAt = performance.now();
    for (let index = 0; options.count === undefined || index < options.count; index++) {
      if (signal?.aborted) break;
      if (options.rate !== undefined) {
        const wait = firstAt + (index * 1000) / options.rate - performance.now();
        if (wait >= 1) await sleep(wait, undefined, { signal }).catch(() => undefined);
      } else if (index > 0) {
        const min = options.minDelaySeconds * 1000;
        const wait = min + Math.random() * (options.maxDelaySeconds * 1000 - min);
        await sleep(wait, undefined, { signal }).catch(() => undefined);
      }
      if (signal?.aborted) break;
      while (inFlight.size >= MAX_UNCONFIRMED) await Promise.race(inFlight);

      const providerId = providers[randomInt(providers.length)]!;
      const value = randomAmount();
      const bad = isBadAt(index, options.badRatio)
        ? BAD_MESSAGES[badKind++ % BAD_MESSAGES.length]!
        : undefined;
      const body = bad ? bad.body(providerId, value) : transactionBody(providerId, value);
      const messageId = options.messageIds ? randomUUID() : undefined;
      const sent = channel
        .sendToQueue(queue, body, {
          persistent: true,
          ...(messageId ? { messageId } : {}),
          ...(bad ? { headers: { [BAD_KIND_HEADER]: bad.kind } } : {}),
        })
        .then(
          () => {
            summary.published++;
            if (bad) summary.bad++;
            // One line per message at the original's pace, and always with --message-ids so each
            // workflow (ingest-<message_id>) can be found.
            if (!progressEvery || messageId) {
              const what = bad ? `malformed (${bad.kind})` : body.toString('utf8');
              log(`sent ${what}${messageId ? ` message_id=${messageId}` : ''}`);
            }
          },
          (error: unknown) => {
            summary.failed++;
            log(`publish not confirmed: ${(error as Error).message}`);
          },
        )
        .finally(() => inFlight.delete(sent));
      inFlight.add(sent);
    }

    const pending = Promise.allSettled([...inFlight]);
    if (signal?.aborted) {
      await Promise.race([pending, sleep(DRAIN_ON_STOP_MS, undefined, { ref: false })]);
      summary.failed += inFlight.size;
    } else {
      await pending;
    }
    if (progressEvery) report();
    return finish();
  } finally {
    for (const timer of timers) clearInterval(timer);
    await channel.close().catch(() => undefined);
    await connection.close().catch(() => undefined);
  }
}

function aborted(signal: AbortSignal | undefined): Promise<void> {
  if (!signal) return new Promise(() => undefined);
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
}
