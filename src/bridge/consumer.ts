import type { AmqpConnectionManager, ChannelWrapper } from 'amqp-connection-manager';
import type { ConfirmChannel, ConsumeMessage } from 'amqplib';
import type { Logger } from 'pino';
import type { AppMetrics } from '../metrics.js';

export interface ConsumerOptions {
  incomingQueue: string;
  prefetch: number;
  /** Wait before re-consuming after a cancel, and the first wait before forcing a reconnect. */
  recoveryDelayMs?: number;
}

export interface ConsumerDeps {
  metrics: AppMetrics;
  log: Logger;
  /**
   * False while deliveries of an earlier consumer are still held: consuming again (a new consumer's
   * prefetch is its own) would then hold more than BRIDGE_PREFETCH.
   */
  mayConsume(): boolean;
}

/** Receives each delivery with a signal that aborts when its channel closes. */
export type Deliver = (channel: ConfirmChannel, message: ConsumeMessage, channelClosed: AbortSignal) => void;

export interface Consumer {
  /** True while the channel is open and either consuming or deliberately paused. */
  isConsuming(): boolean;
  /** Cancels the consumer (basic.cancel) until resume(); deliveries already received stay with their handlers. */
  pause(): void;
  resume(): void;
  /** Cancels the consumer for good; deliveries already received stay with their handlers. */
  cancel(): Promise<void>;
  /** Closes the channel: anything still unacked goes back to the queue. */
  close(): Promise<void>;
}

const MAX_RECOVERY_DELAY_MS = 30_000;
const TICK_MS = 250;

/**
 * Consumes the incoming queue on a confirm channel and keeps consuming. A tick (every 250 ms) consumes
 * on the open channel whenever no consumer is registered, none is paused, and no earlier delivery is
 * still held. Ways to lose the consumer:
 * - the connection drops (counted as connection_lost): amqp-connection-manager reconnects with
 *   backoff and runs `setup` on a fresh channel;
 * - the broker cancels the consumer (basic.cancel, e.g. the queue was deleted): after `recoveryDelayMs`
 *   the tick re-declares the queue as the producer does (durable, no arguments) and consumes again on
 *   the same channel and connection;
 * - the broker closes the channel (e.g. PRECONDITION_FAILED) while the connection stays up. The
 *   manager then waits for a reconnect that never comes, so the tick forces one, with backoff.
 */
export function startConsumer(
  connection: AmqpConnectionManager,
  options: ConsumerOptions,
  deps: ConsumerDeps,
  deliver: Deliver,
): Consumer {
  return new QueueConsumer(connection, options, deps, deliver);
}

class QueueConsumer implements Consumer {
  /** The channel set up on the current connection, while it is open. */
  private open: ConfirmChannel | undefined;
  private current: { channel: ConfirmChannel; tag: string } | undefined;
  private stopped = false;
  private paused = false;
  private consuming = false;
  private consumeNotBefore = 0;
  private forcedReconnects = 0;
  private notConsumingSince: number | undefined;
  private readonly channel: ChannelWrapper;
  private readonly ticker: NodeJS.Timeout;
  private readonly recoveryDelayMs: number;

  constructor(
    private readonly connection: AmqpConnectionManager,
    private readonly options: ConsumerOptions,
    private readonly deps: ConsumerDeps,
    private readonly deliver: Deliver,
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
    // Counted whether consuming or paused; not the reconnects this consumer forces itself.
    connection.on('disconnect', ({ err }) => {
      if (this.stopped || err?.message === 'forced reconnect') return;
      deps.metrics.consumerCancellations.inc({ cause: 'connection_lost' });
    });
    this.ticker = setInterval(() => this.tick(), TICK_MS);
    this.ticker.unref();
  }

  isConsuming(): boolean {
    return this.connection.isConnected() && (this.current !== undefined || (this.paused && !!this.open));
  }

  pause(): void {
    this.paused = true;
    const consumer = this.current;
    this.current = undefined;
    if (consumer) void consumer.channel.cancel(consumer.tag).catch(() => undefined);
  }

  resume(): void {
    this.paused = false;
    this.tick();
  }

  async cancel(): Promise<void> {
    this.stopped = true;
    clearInterval(this.ticker);
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
    const closed = new AbortController();
    raw.on('error', (error: Error) => {
      metrics.consumerCancellations.inc({ cause: 'channel_closed' });
      log.warn({ err: error.message }, 'the broker closed the consumer channel');
    });
    raw.on('close', () => {
      closed.abort(new Error('the channel closed'));
      if (this.current?.channel === raw) this.current = undefined;
      if (this.open === raw) this.open = undefined;
    });
    this.signals.set(raw, closed.signal);
    // Declared exactly as the producer declares it: durable, no arguments.
    await raw.assertQueue(this.options.incomingQueue, { durable: true });
    await raw.prefetch(this.options.prefetch);
    this.open = raw;
    this.tick();
  }

  private readonly signals = new WeakMap<ConfirmChannel, AbortSignal>();

  private async consumeOn(raw: ConfirmChannel): Promise<void> {
    const closed = this.signals.get(raw)!;
    const { consumerTag } = await raw.consume(
      this.options.incomingQueue,
      (message) => (message ? this.deliver(raw, message, closed) : this.onCancelled(raw)),
      { noAck: false },
    );
    this.current = { channel: raw, tag: consumerTag };
    this.forcedReconnects = 0;
    this.deps.log.info({ queue: this.options.incomingQueue, prefetch: this.options.prefetch }, 'consuming');
    // Paused while consume-ok was on its way: cancel at once.
    if (this.paused || this.stopped) this.pause();
  }

  /** basic.cancel from the broker: the tick declares the queue again and consumes on the same channel. */
  private onCancelled(raw: ConfirmChannel): void {
    if (this.current?.channel === raw) this.current = undefined;
    this.consumeNotBefore = Date.now() + this.recoveryDelayMs;
    this.deps.metrics.consumerCancellations.inc({ cause: 'cancel' });
    this.deps.log.warn(
      { queue: this.options.incomingQueue },
      'the broker cancelled our consumer; declaring the queue and consuming again',
    );
  }

  private tick(): void {
    if (this.stopped || this.current || this.paused) {
      this.notConsumingSince = undefined;
      return;
    }
    const raw = this.open;
    if (raw && !this.consuming && Date.now() >= this.consumeNotBefore && this.deps.mayConsume()) {
      this.consuming = true;
      // A failure here closes the channel; the tick then reconnects.
      raw
        .assertQueue(this.options.incomingQueue, { durable: true })
        .then(() => this.consumeOn(raw))
        .catch((error: Error) => this.deps.log.warn({ err: error.message }, 'cannot consume on this channel'))
        .finally(() => (this.consuming = false));
      return;
    }
    if (!raw) this.reconnectIfStuck();
  }

  /** Forces a reconnect, with backoff, while the connection is live but our channel is closed. */
  private reconnectIfStuck(): void {
    if (!this.connection.isConnected()) {
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
      'no open consumer channel on a live connection; reconnecting to RabbitMQ',
    );
    this.connection.reconnect();
  }
}
