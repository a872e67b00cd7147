import type { Client } from '@temporalio/client';
import type { AmqpConnectionManager } from 'amqp-connection-manager';
import pTimeout from 'p-timeout';
import type { Logger } from 'pino';
import type { StartGate } from '../gate.js';
import type { SyncHold } from '../sync-hold.js';
import type { IngestOutages } from '../ingest-outages.js';
import type { AppMetrics } from '../metrics.js';
import { createConfirmedPublisher, type DeadLetterPublisher } from '../rabbitmq/dead-letters.js';
import { TemporalProbe } from '../temporal-probe.js';
import { startConsumer, type Consumer } from './consumer.js';
import { DeliveryHandler } from './handle-delivery.js';
import { saturation, watchBacklog } from './backlog.js';
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
  /** The RabbitMQ connection the bridge consumes on. */
  connection: AmqpConnectionManager;
  /** The connection it publishes dead letters on (default: `connection`); see connection.ts. */
  publishing?: AmqpConnectionManager;
  /** The app's dead-letter publisher (default: one of its own on `publishing`, closed on stop). */
  deadLetters?: DeadLetterPublisher;
  client: Client;
  /** The app's Temporal probe, which readiness reads too (default: one of the bridge's own, stopped on stop). */
  temporal?: StartGate;
  providers: ProviderDirectory;
  metrics: AppMetrics;
  log: Logger;
  /** Where an outage met while starting runs is reported, for /readyz (the app's, shared with the inserts). */
  outages?: IngestOutages;
  /** Where starts wait for the minute's sync while ingest is saturated (the app's SyncHold); none by default. */
  syncHold?: StartGate & Pick<SyncHold, 'heldWithin'>;
}

export interface Bridge {
  /** True while a channel is open and consuming (or deliberately paused). */
  isConsuming(): boolean;
  /** False while the dead-letter queue refuses messages (until one is accepted again). */
  deadLettersAccepted(): boolean;
  /**
   * Whether ingest ran at its bound within the last `ms`: the throttle closed, or (with a sync hold)
   * messages waited in the incoming queue.
   */
  saturatedWithin(ms: number): boolean;
  /** Stops consuming, waits for in-flight messages to be settled, then closes its channel. */
  stop(): Promise<void>;
}

/**
 * Consumes the incoming queue and turns each message into an IngestTransaction start. A message is
 * acked only after Temporal has the workflow, or after its dead letter is confirmed; none is held
 * longer than MAX_HOLD_MS (see handle-delivery.ts), none is taken while Temporal is down or the
 * throttle closed (during a hold for the minute's sync, up to the prefetch wait unacked, ≤ 7 s), and
 * a lost consumer is restored (consumer.ts).
 */
export function startBridge(options: BridgeOptions, deps: BridgeDeps): Bridge {
  const { log, metrics } = deps;
  const draining = new AbortController();
  const stopping = new AbortController();
  const inFlight = new Set<Promise<void>>();
  let deadLettersAccepted = true;

  const { throttle, temporal, ownProbe } = startGates(options, deps);
  const publishing = deps.publishing ?? deps.connection;
  const deadLetters =
    deps.deadLetters ?? createConfirmedPublisher(publishing, options.deadLetterQueue, { log });
  const requeueCopies = createConfirmedPublisher(publishing, options.incomingQueue);
  const deliveries = new DeliveryHandler(options, {
    ...deps,
    deadLetters,
    requeueCopies,
    async startsAllowed(signal) {
      const gates = deps.syncHold ? [throttle, temporal, deps.syncHold] : [throttle, temporal];
      while (gates.some((gate) => !gate.isOpen())) for (const gate of gates) await gate.wait(signal);
    },
    onStarted: () => throttle.noteStart(),
    draining: draining.signal,
    stopping: stopping.signal,
    onDeadLetterOutcome: (accepted) => (deadLettersAccepted = accepted),
  });
  const consumer = startConsumer(
    deps.connection,
    options,
    { metrics, log, mayConsume: () => inFlight.size === 0 },
    (channel, message, channelClosed) => {
      const work = deliveries.handle(channel, message, channelClosed).finally(() => {
        inFlight.delete(work);
        metrics.deliveriesInFlight.set(inFlight.size);
      });
      inFlight.add(work);
      metrics.deliveriesInFlight.set(inFlight.size);
    },
  );
  const stopPausing = pauseWhileStartsWait(
    consumer,
    () => ({
      temporalUp: temporal.isOpen(),
      throttled: throttle.isThrottling(),
      held: inFlight.size,
    }),
    { metrics, log },
  );
  const { syncHold } = deps;
  const backlog = syncHold
    ? watchBacklog(deps.connection, options.incomingQueue, log, {
        heldWithin: (ms) => syncHold.heldWithin(ms),
      })
    : undefined;
  const stopSummary = startIngestSummary(metrics, log, options.summaryIntervalMs, () => ({
    inFlight: inFlight.size,
    throttled: throttle.isThrottling(),
  }));

  return {
    isConsuming: () => consumer.isConsuming(),
    deadLettersAccepted: () => deadLettersAccepted,
    saturatedWithin: saturation(throttle, backlog),
    async stop() {
      stopSummary();
      backlog?.stop();
      stopPausing();
      draining.abort();
      await consumer.cancel();
      log.info({ inFlight: inFlight.size }, 'stopped consuming');
      // Let in-flight starts finish and ack; abort those waiting on an outage (the throttle's already were).
      await settledWithin([...inFlight], 10_000);
      stopping.abort();
      throttle.stop();
      ownProbe?.stop();
      await settledWithin([...inFlight], 5_000);
      log.info('in-flight messages settled');
      // Copies first: one still unsent is rejected (counted), never sent after its original went back.
      await requeueCopies.close().catch(() => undefined);
      await consumer.close().catch(() => undefined);
      if (!deps.deadLetters) await deadLetters.close().catch(() => undefined);
    },
  };
}

/** The bridge's own start gate (the throttle) and Temporal's (the app's probe, or one of its own). */
function startGates(options: BridgeOptions, deps: BridgeDeps) {
  const { metrics, log } = deps;
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
  const ownProbe = deps.temporal ? undefined : new TemporalProbe(deps.client, { log });
  ownProbe?.start();
  const temporal = deps.temporal ?? ownProbe!;
  return { throttle, temporal, ownProbe };
}

/**
 * Takes no deliveries while no start could go ahead (Temporal unreachable, or the throttle closed):
 * cancels the consumer, and consumes again once starts may go ahead and every held delivery has been
 * settled (held ones are requeued after MAX_HOLD_MS), so nothing waits unacked for long.
 */
function pauseWhileStartsWait(
  consumer: Consumer,
  state: () => { temporalUp: boolean; throttled: boolean; held: number },
  deps: { metrics: AppMetrics; log: Logger },
): () => void {
  let paused = false;
  let outage = false;
  const timer = setInterval(() => {
    const { temporalUp, throttled, held } = state();
    if (!paused && (!temporalUp || throttled)) {
      paused = true;
      consumer.pause();
      deps.metrics.bridgeConsumerPaused.set(1);
      // Throttling is healthy and the throttle logs its own transitions; an unreachable Temporal is not.
      outage = !temporalUp;
      deps.log[outage ? 'warn' : 'debug'](
        { temporalUp, throttled, held },
        'no deliveries taken until starts can go ahead',
      );
    } else if (paused && temporalUp && !throttled && held === 0) {
      paused = false;
      consumer.resume();
      deps.metrics.bridgeConsumerPaused.set(0);
      deps.log[outage ? 'info' : 'debug']('taking deliveries again');
    }
  }, 250);
  timer.unref();
  return () => clearInterval(timer);
}

/** Waits for the promises to settle, or for `ms`, whichever comes first. */
async function settledWithin(promises: Promise<unknown>[], ms: number): Promise<void> {
  await pTimeout(Promise.allSettled(promises), { milliseconds: ms, fallback: () => undefined });
}
