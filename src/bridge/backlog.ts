import type { AmqpConnectionManager } from 'amqp-connection-manager';
import pTimeout from 'p-timeout';
import type { Logger } from 'pino';
import { onThrowawayChannel } from '../rabbitmq/dead-letters.js';

export const BACKLOG_CHECK_INTERVAL_MS = 2_000;
/** A check that has not answered by then fails, and the next one may start. */
const CHECK_TIMEOUT_MS = 5_000;
/**
 * Checks during a hold for the minute's sync, and this long after it, do not count: what piled up
 * while starts waited is the hold's own backlog, and counting it would hold the next minute too at
 * any rate above about BRIDGE_PREFETCH per hold. A backlog that outlasts this is ingest at its bound.
 */
export const AFTER_HOLD_IGNORED_MS = 10_000;

export interface BacklogWatch {
  /** Whether a check within the last `ms` found ready messages in the incoming queue (outside holds). */
  seenWithin(ms: number): boolean;
  stop(): void;
}

export interface BacklogWatchOptions {
  /** The sync hold's own SyncHold.heldWithin: whether a hold is on or ended within `ms`. */
  heldWithin: (ms: number) => boolean;
  intervalMs?: number;
  timeoutMs?: number;
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
  { heldWithin, intervalMs = BACKLOG_CHECK_INTERVAL_MS, timeoutMs = CHECK_TIMEOUT_MS }: BacklogWatchOptions,
): BacklogWatch {
  let seenAt: number | undefined;
  let checking = false;
  let lastFailure: string | undefined;
  const check = async () => {
    const model = connection.connection;
    if (!model || checking) return;
    checking = true;
    try {
      const { messageCount } = await pTimeout(
        onThrowawayChannel(model, (channel) => channel.checkQueue(queue)),
        { milliseconds: timeoutMs, message: `no answer in ${timeoutMs} ms` },
      );
      if (messageCount > 0 && !heldWithin(AFTER_HOLD_IGNORED_MS)) seenAt = Date.now();
      lastFailure = undefined;
    } catch (error) {
      const reason = (error as Error).message;
      // A connection lost meanwhile is the consumer's to report.
      if (reason !== lastFailure && connection.connection === model) {
        log.warn(
          { queue, err: reason },
          'cannot read the incoming queue’s depth; the sync hold sees only the throttle',
        );
        lastFailure = reason;
      }
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
