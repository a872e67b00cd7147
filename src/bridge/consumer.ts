import type { AmqpConnectionManager, ChannelWrapper } from 'amqp-connection-manager';
import type { ConfirmChannel, ConsumeMessage } from 'amqplib';
import type { Logger } from 'pino';
import type { AppMetrics } from '../metrics.js';
import { ensureQueue } from '../rabbitmq/dead-letters.js';

export interface ConsumerOptions {
  incomingQueue: string;
  deadLetterQueue: string;
  prefetch: number;
  /** Wait before re-consuming after a cancel, and the first wait before forcing a reconnect. */
  recoveryDelayMs?: number;
}

export interface Consumer {
  /** True while a consumer is registered on an open channel of a live connection. */
  isConsuming(): boolean;
  /** Cancels the consumer; deliveries already received stay with their handlers. */
  cancel(): Promise<void>;
  /** Closes the channel: anything still unacked goes back to the queue. */
  close(): Promise<void>;
}

const MAX_RECOVERY_DELAY_MS = 30_000;

/**
 * Consumes the incoming queue on a confirm channel and keeps consuming. Three ways to lose the consumer:
 * - the connection drops: amqp-connection-manager reconnects and runs `setup` again;
 * - the broker cancels the consumer (basic.cancel, e.g. the queue was deleted): re-declare the queue as
 *   the producer does (durable, no arguments) and consume again on the same channel;
 * - the broker closes the channel (e.g. PRECONDITION_FAILED) while the connection stays up. The
 *   manager then waits for a reconnect that never comes, so a watchdog forces one, with backoff, as
 *   long as no consumer is registered on a live connection.
 */
export function startConsumer(
  connection: AmqpConnectionManager,
  options: ConsumerOptions,
  deps: { metrics: AppMetrics; log: Logger },
  deliver: (channel: ConfirmChannel, message: ConsumeMessage) => void,
): Consumer {
  const { log, metrics } = deps;
  const recoveryDelayMs = options.recoveryDelayMs ?? 1_000;
  let current: { channel: ConfirmChannel; tag: string } | undefined;
  let stopped = false;

  async function consumeOn(raw: ConfirmChannel): Promise<void> {
    const { consumerTag } = await raw.consume(
      options.incomingQueue,
      (message) => (message ? deliver(raw, message) : onCancelled(raw)),
      { noAck: false },
    );
    current = { channel: raw, tag: consumerTag };
    forcedReconnects = 0;
    log.info({ queue: options.incomingQueue, prefetch: options.prefetch }, 'consuming');
  }

  function onCancelled(raw: ConfirmChannel) {
    if (current?.channel === raw) current = undefined;
    metrics.consumerCancellations.inc({ cause: 'cancel' });
    log.warn(
      { queue: options.incomingQueue },
      'the broker cancelled our consumer; declaring the queue and consuming again',
    );
    setTimeout(() => {
      if (stopped || current) return;
      // A failure here closes the channel; the watchdog then reconnects.
      raw
        .assertQueue(options.incomingQueue, { durable: true })
        .then(() => consumeOn(raw))
        .catch((error: Error) => log.warn({ err: error.message }, 'cannot consume again on this channel'));
    }, recoveryDelayMs).unref();
  }

  const channel: ChannelWrapper = connection.createChannel({
    confirm: true,
    name: 'consumer',
    setup: async (raw: ConfirmChannel) => {
      raw.on('error', (error: Error) => {
        metrics.consumerCancellations.inc({ cause: 'channel_closed' });
        log.warn({ err: error.message }, 'the broker closed the consumer channel');
      });
      raw.on('close', () => {
        if (current?.channel === raw) current = undefined;
      });
      // Declared exactly as the producer declares it: durable, no arguments.
      await raw.assertQueue(options.incomingQueue, { durable: true });
      await ensureQueue(connection.connection, options.deadLetterQueue);
      if (stopped) return;
      await raw.prefetch(options.prefetch);
      await consumeOn(raw);
    },
  });
  channel.on('error', (error: Error) => log.warn({ err: error.message }, 'RabbitMQ consumer channel error'));

  let forcedReconnects = 0;
  let notConsumingSince: number | undefined;
  const watchdog = setInterval(() => {
    if (stopped || current || !connection.isConnected()) {
      notConsumingSince = undefined;
      return;
    }
    notConsumingSince ??= Date.now();
    const wait = Math.min(recoveryDelayMs * 2 ** (forcedReconnects + 1), MAX_RECOVERY_DELAY_MS);
    if (Date.now() - notConsumingSince < wait) return;
    forcedReconnects++;
    notConsumingSince = undefined;
    log.warn({ attempt: forcedReconnects }, 'not consuming on a live connection; reconnecting to RabbitMQ');
    connection.reconnect();
  }, 250);
  watchdog.unref();

  return {
    isConsuming: () => current !== undefined && connection.isConnected(),
    async cancel() {
      stopped = true;
      clearInterval(watchdog);
      const consumer = current;
      current = undefined;
      if (consumer) await consumer.channel.cancel(consumer.tag).catch(() => undefined);
    },
    close: () => channel.close(),
  };
}
