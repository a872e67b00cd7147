import type { Client } from '@temporalio/client';
import type { AmqpConnectionManager } from 'amqp-connection-manager';
import type { Logger } from 'pino';
import type { IngestOutages } from '../ingest-outages.js';
import type { AppMetrics } from '../metrics.js';
import { startConsumer } from './consumer.js';
import { DeliveryHandler } from './handle-delivery.js';
import { startIngestSummary } from './ingest-summary.js';
import type { ProviderDirectory } from './provider-directory.js';
import { InFlightThrottle } from './in-flight-throttle.js';

export interface BridgeOptions {
  incomingQueue: string;
  deadLetterQueue: string;
  prefetch: number;
  maxMessageBytes: number;
  taskQueue: string;
  eagerStart: boolean;
  /** Start nothing while this many IngestTransaction runs are unfinished (0: no limit). */
  maxInFlight: number;
  /** How often to log the ingest summary (0: never). */
  summaryIntervalMs: number;
  /** How often the throttle counts unfinished runs (default 500 ms). */
  throttlePollMs?: number;
  /** First wait before consuming again after a cancel or a closed channel (tests shorten it). */
  recoveryDelayMs?: number;
}

export interface BridgeDeps {
  /** The process's RabbitMQ connection; the bridge opens its own channel on it. */
  connection: AmqpConnectionManager;
  client: Client;
  providers: ProviderDirectory;
  metrics: AppMetrics;
  log: Logger;
  /** Where an outage met while starting runs is reported, for /readyz (the app's, shared with the inserts). */
  outages?: IngestOutages;
}

export interface Bridge {
  /** True while a channel is open and consuming. */
  isConsuming(): boolean;
  /** False while the dead-letter queue refuses messages (until one is accepted again). */
  deadLettersAccepted(): boolean;
  /** Stops consuming, waits for in-flight messages to be settled, then closes its channel. */
  stop(): Promise<void>;
}

/**
 * Consumes the incoming queue and turns each message into an IngestTransaction start. A message is
 * acked only after Temporal has the workflow, or after its dead letter is confirmed; nothing stays
 * unacked on a live channel (see handle-delivery.ts), and a lost consumer is restored (consumer.ts).
 */
export function startBridge(options: BridgeOptions, deps: BridgeDeps): Bridge {
  const { log, metrics } = deps;
  const draining = new AbortController();
  const stopping = new AbortController();
  const inFlight = new Set<Promise<void>>();
  let deadLettersAccepted = true;

  const throttle = new InFlightThrottle(
    deps.client,
    {
      taskQueue: options.taskQueue,
      maxInFlight: options.maxInFlight,
      pollMs: options.throttlePollMs,
    },
    { metrics, log },
  );
  throttle.start();
  const deliveries = new DeliveryHandler(options, {
    ...deps,
    throttle,
    draining: draining.signal,
    stopping: stopping.signal,
    onDeadLetterOutcome: (accepted) => (deadLettersAccepted = accepted),
  });
  const consumer = startConsumer(deps.connection, options, deps, (channel, message) => {
    const work = deliveries.handle(channel, message).finally(() => {
      inFlight.delete(work);
      metrics.deliveriesInFlight.set(inFlight.size);
    });
    inFlight.add(work);
    metrics.deliveriesInFlight.set(inFlight.size);
  });
  const stopSummary = startIngestSummary(metrics, log, options.summaryIntervalMs, () => ({
    inFlight: inFlight.size,
    throttled: throttle.isThrottling(),
  }));

  return {
    isConsuming: () => consumer.isConsuming(),
    deadLettersAccepted: () => deadLettersAccepted,
    async stop() {
      stopSummary();
      draining.abort();
      await consumer.cancel();
      log.info({ inFlight: inFlight.size }, 'stopped consuming');
      // Let in-flight starts finish and ack; abort those waiting on an outage (the throttle's already were).
      await settledWithin([...inFlight], 10_000);
      stopping.abort();
      throttle.stop();
      await settledWithin([...inFlight], 5_000);
      log.info('in-flight messages settled');
      await consumer.close().catch(() => undefined);
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
