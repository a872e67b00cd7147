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
  return new QueueConsumer(connection, options, deps, deliver);
}

class QueueConsumer implements Consumer {
  private current: { channel: ConfirmChannel; tag: string } | undefined;
  private stopped = false;
  private forcedReconnects = 0;
  private notConsumingSince: number | undefined;
  private readonly channel: ChannelWrapper;
  private readonly watchdog: NodeJS.Timeout;
  private readonly recoveryDelayMs: number;

  constructor(
    private readonly connection: AmqpConnectionManager,
    private readonly options: ConsumerOptions,
    private readonly deps: { metrics: AppMetrics; log: Logger },
    private readonly deliver: (channel: ConfirmChannel, message: ConsumeMessage) => void,
  ) {
    this.recoveryDelayMs = options.recoveryDelayMs ?? 1_000;
    this.channel = connection.createChannel({
      confirm: true,
      name: 'consumer',
      setup: (raw: ConfirmChannel) => this.setup(raw),
    });
    this.channel.on('error', (error: Error) =>
      deps.log.warn({ err: error.message }, 'RabbitMQ consumer channel error'),
    );
    this.watchdog = setInterval(() => this.reconnectIfStuck(), 250);
    this.watchdog.unref();
  }

  isConsuming(): boolean {
    return this.current !== undefined && this.connection.isConnected();
  }

  async cancel(): Promise<void> {
    this.stopped = true;
    clearInterval(this.watchdog);
    const consumer = this.current;
    this.current = undefined;
    if (consumer) await consumer.channel.cancel(consumer.tag).catch(() => undefined);
  }

  close(): Promise<void> {
    return this.channel.close();
  }

  /** Run by the connection manager on every (re)connect, on a fresh channel. */
  private async setup(raw: ConfirmChannel): Promise<void> {
    const { log, metrics } = this.deps;
    raw.on('error', (error: Error) => {
      metrics.consumerCancellations.inc({ cause: 'channel_closed' });
      log.warn({ err: error.message }, 'the broker closed the consumer channel');
    });
    raw.on('close', () => {
      if (this.current?.channel === raw) this.current = undefined;
    });
    // Declared exactly as the producer declares it: durable, no arguments.
    await raw.assertQueue(this.options.incomingQueue, { durable: true });
    await ensureQueue(this.connection.connection, this.options.deadLetterQueue);
    if (this.stopped) return;
    await raw.prefetch(this.options.prefetch);
    await this.consumeOn(raw);
  }

  private async consumeOn(raw: ConfirmChannel): Promise<void> {
    const { consumerTag } = await raw.consume(
      this.options.incomingQueue,
      (message) => (message ? this.deliver(raw, message) : this.onCancelled(raw)),
      { noAck: false },
    );
    this.current = { channel: raw, tag: consumerTag };
    this.forcedReconnects = 0;
    this.deps.log.info({ queue: this.options.incomingQueue, prefetch: this.options.prefetch }, 'consuming');
  }

  /** basic.cancel from the broker: declare the queue again and consume on the same channel. */
  private onCancelled(raw: ConfirmChannel): void {
    if (this.current?.channel === raw) this.current = undefined;
    this.deps.metrics.consumerCancellations.inc({ cause: 'cancel' });
    this.deps.log.warn(
      { queue: this.options.incomingQueue },
      'the broker cancelled our consumer; declaring the queue and consuming again',
    );
    setTimeout(() => {
      if (this.stopped || this.current) return;
      // A failure here closes the channel; the watchdog then reconnects.
      raw
        .assertQueue(this.options.incomingQueue, { durable: true })
        .then(() => this.consumeOn(raw))
        .catch((error: Error) =>
          this.deps.log.warn({ err: error.message }, 'cannot consume again on this channel'),
        );
    }, this.recoveryDelayMs).unref();
  }

  /** Forces a reconnect, with backoff, while no consumer is registered on a live connection. */
  private reconnectIfStuck(): void {
    if (this.stopped || this.current || !this.connection.isConnected()) {
      this.notConsumingSince = undefined;
      return;
    }
    this.notConsumingSince ??= Date.now();
    const wait = Math.min(this.recoveryDelayMs * 2 ** (this.forcedReconnects + 1), MAX_RECOVERY_DELAY_MS);
    if (Date.now() - this.notConsumingSince < wait) return;
    this.forcedReconnects++;
    this.notConsumingSince = undefined;
    this.deps.log.warn(
      { attempt: this.forcedReconnects },
      'not consuming on a live connection; reconnecting to RabbitMQ',
    );
    this.connection.reconnect();
  }
}
