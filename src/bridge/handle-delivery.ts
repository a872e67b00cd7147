import type { Client } from '@temporalio/client';
import type { ConfirmChannel, ConsumeMessage } from 'amqplib';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { OriginalMessage } from '../activities/index.js';
import type { AppMetrics } from '../metrics.js';
import { keptHeaders } from '../rabbitmq/dead-letters.js';
import { publishDeadLetter } from './dead-letter.js';
import { parseTransaction } from './parse-transaction.js';
import type { ProviderDirectory } from './provider-directory.js';
import { ingestWorkflowId, startIngest, type StartOutcome } from './start-ingest.js';
import type { InFlightThrottle } from './in-flight-throttle.js';

export interface DeliveryOptions {
  deadLetterQueue: string;
  maxMessageBytes: number;
  taskQueue: string;
  eagerStart: boolean;
}

export interface DeliveryDeps {
  client: Client;
  providers: ProviderDirectory;
  throttle: InFlightThrottle;
  metrics: AppMetrics;
  log: Logger;
  /** Aborted on shutdown: waiting deliveries are left unacked for the broker to redeliver. */
  stopping: AbortSignal;
  /** Told whether the last dead letter was accepted, for readiness. */
  onDeadLetterOutcome(accepted: boolean): void;
}

/** What a delivery becomes: acked after its start, or dead-lettered with a reason. */
type Verdict = { ack: Exclude<StartOutcome, 'message_id_conflict'> } | { code: string; reason: string };

const MAX_MESSAGE_ID_LENGTH = 200;
/** Attempts for an error that is not an outage (a bug, a refused dead letter) before giving up. */
const MAX_UNEXPECTED_ATTEMPTS = 3;
/** How long a message whose dead letter was refused is held before it is requeued. */
const REFUSED_REQUEUE_DELAY_MS = 2_000;

/**
 * Decides what each delivery becomes, and settles it. Every delivery ends one of three ways: acked
 * (Temporal has the start, or the dead letter is confirmed); nacked and requeued after bounded retries
 * (an unexpected error the first time, a refused dead letter); or left to the broker when the channel
 * closes (shutdown, connection loss). Outages of Temporal or Postgres are retried for as long as they
 * last; readiness reports them. A message that fails unexpectedly again after its redelivery is
 * dead-lettered as processing_error, so a poison message never loops.
 */
export function createDeliveryHandler(options: DeliveryOptions, deps: DeliveryDeps) {
  const { log, metrics, stopping } = deps;

  async function decide(message: ConsumeMessage, receivedAtMs: number): Promise<Verdict> {
    const parsed = parseTransaction(
      {
        body: message.content,
        contentType: message.properties.contentType as string | undefined,
        contentEncoding: message.properties.contentEncoding as string | undefined,
      },
      options.maxMessageBytes,
    );
    if (!parsed.ok) return { code: parsed.code, reason: parsed.reason };
    const messageId = message.properties.messageId as unknown;
    if (
      messageId !== undefined &&
      (typeof messageId !== 'string' || messageId.length > MAX_MESSAGE_ID_LENGTH)
    ) {
      return {
        code: 'invalid_message_id',
        reason: `message_id must be a string of at most ${MAX_MESSAGE_ID_LENGTH} characters`,
      };
    }
    const { transaction } = parsed;
    const workflowId = ingestWorkflowId(messageId || undefined);
    const bodySha256 = createHash('sha256').update(message.content).digest('hex');
    await deps.throttle.whenOpen(stopping);
    const outcome = await retrying('start IngestTransaction', async () => {
      if (!(await deps.providers.has(transaction.providerId))) return 'unknown_provider' as const;
      const started = performance.now();
      const result = await startIngest(deps.client, {
        taskQueue: options.taskQueue,
        workflowId,
        transaction,
        receivedAtMs,
        bodySha256,
        original: originalMessage(message),
        eager: options.eagerStart,
      });
      metrics.workflowStartSeconds.observe((performance.now() - started) / 1000);
      if (result === 'started') deps.throttle.noteStart();
      return result;
    });
    if (outcome === 'unknown_provider') {
      return {
        code: 'unknown_provider',
        reason: `provider id ${transaction.providerId} is not in initial_data`,
      };
    }
    if (outcome === 'message_id_conflict') {
      return {
        code: 'message_id_conflict',
        reason: `message_id ${String(messageId)} was already used for a different body`,
      };
    }
    return { ack: outcome };
  }

  /**
   * Runs `attempt` until it succeeds: through outages for as long as they last, through other errors
   * MAX_UNEXPECTED_ATTEMPTS times. Rethrows on shutdown or when those attempts are used up.
   */
  async function retrying<T>(what: string, attempt: () => Promise<T>): Promise<T> {
    let unexpected = 0;
    for (let attemptNumber = 1; ; attemptNumber++) {
      try {
        return await attempt();
      } catch (error) {
        const outage = isOutage(error);
        if (stopping.aborted || (!outage && ++unexpected >= MAX_UNEXPECTED_ATTEMPTS)) throw error;
        log.warn(
          { err: (error as Error).message, attempt: attemptNumber, outage },
          `cannot ${what} yet; retrying`,
        );
        await sleep(Math.min(100 * 2 ** (attemptNumber - 1), 5_000), undefined, { signal: stopping });
      }
    }
  }

  function settle(raw: ConfirmChannel, message: ConsumeMessage, action: 'ack' | 'requeue'): boolean {
    try {
      if (action === 'ack') raw.ack(message);
      else raw.nack(message, false, true);
      return true;
    } catch (error) {
      // The channel has closed: the broker redelivers the message; the workflow ID or ledger absorbs it.
      log.warn(
        { err: (error as Error).message, action },
        'channel closed before settling; the broker will redeliver',
      );
      return false;
    }
  }

  function requeue(raw: ConfirmChannel, message: ConsumeMessage, reason: string, error: unknown) {
    if (stopping.aborted || !settle(raw, message, 'requeue')) return;
    metrics.messagesRequeued.inc({ reason });
    log.warn(
      { reason, err: (error as Error).message, messageId: message.properties.messageId as unknown },
      'message requeued',
    );
  }

  async function deadLetter(raw: ConfirmChannel, message: ConsumeMessage, code: string, reason: string) {
    try {
      await retrying('publish a dead letter', () =>
        publishDeadLetter(raw, options.deadLetterQueue, message, code, reason),
      );
    } catch (error) {
      deps.onDeadLetterOutcome(false);
      log.error({ code, err: (error as Error).message }, 'the dead-letter queue refused a message');
      // Held a little before going back, so a full dead-letter queue is not a hot loop.
      const held = await sleep(REFUSED_REQUEUE_DELAY_MS, true, { signal: stopping }).catch(() => false);
      if (held) requeue(raw, message, 'dead_letter_refused', error);
      return;
    }
    deps.onDeadLetterOutcome(true);
    if (settle(raw, message, 'ack')) metrics.messagesDeadLettered.inc({ code });
    log.warn({ code, reason, messageId: message.properties.messageId as unknown }, 'message dead-lettered');
  }

  return async function handleDelivery(raw: ConfirmChannel, message: ConsumeMessage): Promise<void> {
    const receivedAtMs = Date.now();
    metrics.messagesConsumed.inc();
    let verdict: Verdict;
    try {
      verdict = await decide(message, receivedAtMs);
    } catch (error) {
      if (stopping.aborted) return; // unacked: the broker redelivers it when the channel closes
      if (!message.fields.redelivered) return requeue(raw, message, 'processing_error', error);
      verdict = {
        code: 'processing_error',
        reason: `failed again after redelivery: ${(error as Error).message}`,
      };
    }
    if ('ack' in verdict) {
      if (settle(raw, message, 'ack')) metrics.messagesAcked.inc({ outcome: verdict.ack });
      return;
    }
    await deadLetter(raw, message, verdict.code, verdict.reason.slice(0, 300));
  };
}

/** The message as received, for a dead letter the workflow may have to write after the ack. */
function originalMessage(message: ConsumeMessage): OriginalMessage {
  const { headers, ...properties } = message.properties;
  const scalar = (value: unknown) => ['string', 'number', 'boolean'].includes(typeof value);
  return {
    bodyBase64: message.content.toString('base64'),
    properties: Object.fromEntries(
      Object.entries(properties).filter(
        ([, value]) => typeof value === 'string' || typeof value === 'number',
      ),
    ),
    headers: Object.fromEntries(
      Object.entries(keptHeaders(headers)).filter(([, value]) => scalar(value)),
    ) as Record<string, string | number | boolean>,
  };
}

const GRPC_OUTAGE_CODES = new Set([1, 4, 8, 10, 14]); // CANCELLED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, UNAVAILABLE
const SQLSTATE_OUTAGE = /^(08|53|57P|40001|40P01)/; // connection, resources, shutdown, serialization

/** True if the error (or a cause) says a dependency is unreachable or overloaded, not that the input or code is wrong. */
export function isOutage(error: unknown): boolean {
  for (let current = error, depth = 0; current && depth < 5; depth++) {
    const { code, message, cause } = current as { code?: unknown; message?: unknown; cause?: unknown };
    if (typeof code === 'number' && GRPC_OUTAGE_CODES.has(code)) return true;
    if (typeof code === 'string' && (/^E[A-Z_]+$/.test(code) || SQLSTATE_OUTAGE.test(code))) return true;
    if (
      typeof message === 'string' &&
      /Connection terminated|timeout exceeded when trying to connect/i.test(message)
    )
      return true;
    current = cause;
  }
  return false;
}
