import type { Client } from '@temporalio/client';
import amqp, { type AmqpConnectionManager, type ChannelWrapper } from 'amqp-connection-manager';
import type { ConfirmChannel, ConsumeMessage } from 'amqplib';
import pRetry from 'p-retry';
import type { Logger } from 'pino';
import type { AppMetrics } from '../metrics.js';
import { publishDeadLetter } from './dead-letter.js';
import { parseTransaction, type DeadLetterCode } from './parse-transaction.js';
import type { ProviderDirectory } from './provider-directory.js';
import { ingestWorkflowId, startIngest } from './start-ingest.js';

export interface BridgeOptions {
  rabbitmqUrl: string;
  incomingQueue: string;
  deadLetterQueue: string;
  prefetch: number;
  maxMessageBytes: number;
  taskQueue: string;
  eagerStart: boolean;
}

export interface BridgeDeps {
  client: Client;
  providers: ProviderDirectory;
  metrics: AppMetrics;
  log: Logger;
}

export interface Bridge {
  /** True while a channel is open and consuming. */
  isConsuming(): boolean;
  /** Stops consuming, waits for in-flight messages to be started and acked, then disconnects. */
  stop(): Promise<void>;
}

const MAX_MESSAGE_ID_LENGTH = 200;

/**
 * Consumes the incoming queue and turns each message into an IngestTransaction start. A message is
 * acked only after Temporal has the workflow, or after its dead letter is confirmed. The connection
 * manager reconnects by itself; unacked messages are then redelivered by the broker.
 */
export function startBridge(options: BridgeOptions, deps: BridgeDeps): Bridge {
  const { log, metrics } = deps;
  const stopping = new AbortController();
  const inFlight = new Set<Promise<void>>();
  let consumer: { channel: ConfirmChannel; tag: string } | undefined;

  const connection: AmqpConnectionManager = amqp.connect([options.rabbitmqUrl], {
    heartbeatIntervalInSeconds: 5,
    reconnectTimeInSeconds: 1,
    // Shown in the RabbitMQ management UI and `rabbitmqctl list_connections client_properties`.
    connectionOptions: { clientProperties: { connection_name: `balance-sync bridge ${options.taskQueue}` } },
  });
  connection.on('connect', () => log.info('connected to RabbitMQ'));
  connection.on('disconnect', ({ err }) => log.warn({ err: err?.message }, 'disconnected from RabbitMQ'));
  connection.on('connectFailed', ({ err }) =>
    log.warn({ err: err?.message }, 'cannot reach RabbitMQ; retrying'),
  );

  const channel: ChannelWrapper = connection.createChannel({
    confirm: true,
    setup: async (raw: ConfirmChannel) => {
      // Declared exactly as the producer declares it: durable, no arguments.
      await raw.assertQueue(options.incomingQueue, { durable: true });
      await raw.assertQueue(options.deadLetterQueue, { durable: true });
      if (stopping.signal.aborted) return;
      await raw.prefetch(options.prefetch);
      raw.on('close', () => {
        if (consumer?.channel === raw) consumer = undefined;
      });
      const { consumerTag } = await raw.consume(
        options.incomingQueue,
        (message) => {
          if (!message) return; // the broker cancelled us; the manager re-runs setup
          const work = handle(raw, message).finally(() => inFlight.delete(work));
          inFlight.add(work);
        },
        { noAck: false },
      );
      consumer = { channel: raw, tag: consumerTag };
      log.info({ queue: options.incomingQueue, prefetch: options.prefetch }, 'consuming');
    },
  });
  channel.on('error', (err: Error) => log.warn({ err: err.message }, 'RabbitMQ channel error'));

  // Acks go to the channel that delivered the message. If that channel has closed, the broker will
  // redeliver the message and the stable workflow ID (or the ledger) absorbs the repeat.
  function ack(raw: ConfirmChannel, message: ConsumeMessage): boolean {
    try {
      raw.ack(message);
      return true;
    } catch (error) {
      log.warn({ err: (error as Error).message }, 'ack failed: channel closed; the broker will redeliver');
      return false;
    }
  }

  async function deadLetter(
    raw: ConfirmChannel,
    message: ConsumeMessage,
    code: DeadLetterCode,
    reason: string,
  ) {
    await publishDeadLetter(raw, options.deadLetterQueue, message, code, reason);
    if (ack(raw, message)) metrics.messagesDeadLettered.inc({ code });
    log.warn({ code, reason, messageId: message.properties.messageId as unknown }, 'message dead-lettered');
  }

  async function handle(raw: ConfirmChannel, message: ConsumeMessage): Promise<void> {
    const receivedAtMs = Date.now();
    metrics.messagesConsumed.inc();
    try {
      const parsed = parseTransaction(
        {
          body: message.content,
          contentType: message.properties.contentType as string | undefined,
          contentEncoding: message.properties.contentEncoding as string | undefined,
        },
        options.maxMessageBytes,
      );
      if (!parsed.ok) return await deadLetter(raw, message, parsed.code, parsed.reason);
      const messageId = message.properties.messageId as unknown;
      if (
        messageId !== undefined &&
        (typeof messageId !== 'string' || messageId.length > MAX_MESSAGE_ID_LENGTH)
      ) {
        return await deadLetter(
          raw,
          message,
          'invalid_message_id',
          `message_id must be a string of at most ${MAX_MESSAGE_ID_LENGTH} characters`,
        );
      }
      const { transaction } = parsed;
      const workflowId = ingestWorkflowId(messageId || undefined);
      const outcome = await retryUntilStopped(async () => {
        if (!(await deps.providers.has(transaction.providerId))) return 'unknown_provider' as const;
        const started = performance.now();
        const result = await startIngest(deps.client, {
          taskQueue: options.taskQueue,
          workflowId,
          transaction,
          receivedAtMs,
          eager: options.eagerStart,
        });
        metrics.workflowStartSeconds.observe((performance.now() - started) / 1000);
        return result;
      });
      if (outcome === 'unknown_provider') {
        return await deadLetter(
          raw,
          message,
          'unknown_provider',
          `provider id ${transaction.providerId} is not in initial_data`,
        );
      }
      if (outcome && ack(raw, message)) metrics.messagesAcked.inc({ outcome });
    } catch (error) {
      // Left unacked: the broker redelivers it once this channel closes.
      log.error({ err: (error as Error).message }, 'message not handled; it stays unacked');
    }
  }

  /** Retries while Temporal or Postgres is unavailable; gives up (message unacked) only on shutdown. */
  async function retryUntilStopped<T>(attempt: () => Promise<T>): Promise<T | undefined> {
    try {
      return await pRetry(attempt, {
        retries: Number.POSITIVE_INFINITY,
        minTimeout: 100,
        maxTimeout: 5_000,
        signal: stopping.signal,
        onFailedAttempt: ({ error, attemptNumber }) =>
          log.warn(
            { err: error.message, attempt: attemptNumber },
            'cannot start IngestTransaction yet; retrying',
          ),
      });
    } catch (error) {
      if (stopping.signal.aborted) return undefined;
      throw error;
    }
  }

  return {
    isConsuming: () => consumer !== undefined && connection.isConnected(),
    async stop() {
      const current = consumer;
      consumer = undefined;
      if (current) await current.channel.cancel(current.tag).catch(() => undefined);
      log.info({ inFlight: inFlight.size }, 'stopped consuming');
      // Let in-flight starts finish and ack; abort only retries that are waiting on an outage.
      await settledWithin([...inFlight], 10_000);
      stopping.abort();
      await settledWithin([...inFlight], 5_000);
      log.info('in-flight messages settled');
      await channel.close().catch(() => undefined);
      await connection.close().catch(() => undefined);
    },
  };
}

/** Waits for the promises to settle, or for `ms`, whichever comes first. */
async function settledWithin(promises: Promise<unknown>[], ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
  });
  await Promise.race([Promise.allSettled(promises), timeout]);
  clearTimeout(timer);
}
