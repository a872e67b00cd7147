import type { AmqpConnectionManager } from 'amqp-connection-manager';
import type { Logger } from 'pino';
import { onThrowawayChannel } from '../rabbitmq/dead-letters.js';

export const BACKLOG_CHECK_INTERVAL_MS = 2_000;

export interface BacklogWatch {
  /** Whether the incoming queue held ready messages at a check within the last `ms`. */
  seenWithin(ms: number): boolean;
  stop(): void;
}

/**
 * Whether messages wait in the incoming queue beyond what the bridge holds: a passive declare every
 * `intervalMs` on a channel of its own (ready messages only; the bridge's unacked ones are not
 * counted). A drain is ingest at its bound even when the throttle never closes: with every start
 * eager, runs finish before BRIDGE_MAX_IN_FLIGHT are open, and the CPU is what runs out. While
 * disconnected nothing is checked (the consumer reports that); a check that fails otherwise gives
 * one warn line per distinct reason, since the sync hold then sees only the throttle.
 */
export function watchBacklog(
  connection: Pick<AmqpConnectionManager, 'connection'>,
  queue: string,
  log: Logger,
  intervalMs = BACKLOG_CHECK_INTERVAL_MS,
): BacklogWatch {
  let seenAt: number | undefined;
  let checking = false;
  let lastFailure: string | undefined;
  const check = async () => {
    const model = connection.connection;
    if (!model || checking) return;
    checking = true;
    try {
      const { messageCount } = await onThrowawayChannel(model, (channel) => channel.checkQueue(queue));
      if (messageCount > 0) seenAt = Date.now();
      lastFailure = undefined;
    } catch (error) {
      const reason = (error as Error).message;
      if (reason !== lastFailure && connection.connection === model)
        log.warn(
          { queue, err: reason },
          'cannot read the incoming queue’s depth; the sync hold sees only the throttle',
        );
      lastFailure = reason;
    } finally {
      checking = false;
    }
  };
  const timer = setInterval(() => void check(), intervalMs);
  timer.unref();
  return {
    seenWithin: (ms) => seenAt !== undefined && Date.now() - seenAt <= ms,
    stop: () => clearInterval(timer),
  };
}

/** Ingest ran at its bound within the last `ms`: the throttle closed, or messages waited in the queue. */
export const saturation =
  (throttle: { closedWithin(ms: number): boolean }, backlog: BacklogWatch | undefined) =>
  (ms: number): boolean =>
    throttle.closedWithin(ms) || (backlog?.seenWithin(ms) ?? false);
