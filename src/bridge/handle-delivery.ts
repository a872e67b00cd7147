import type { Client } from '@temporalio/client';
import type { AmqpConnectionManager } from 'amqp-connection-manager';
import type { ConfirmChannel, ConsumeMessage } from 'amqplib';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { OriginalMessage } from '../activities/index.js';
import { outageDependency } from '../failures.js';
import type { IngestOutages } from '../ingest-outages.js';
import type { AppMetrics } from '../metrics.js';
import { ensureQueue, keptHeaders } from '../rabbitmq/dead-letters.js';
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
  /** The process's RabbitMQ connection, to make sure the dead-letter queue exists before a dead letter. */
  connection: AmqpConnectionManager;
  client: Client;
  providers: ProviderDirectory;
  throttle: InFlightThrottle;
  metrics: AppMetrics;
  log: Logger;
  /** Aborted when shutdown begins: deliveries waiting for the throttle are left unacked. */
  draining: AbortSignal;
  /** Aborted when shutdown stops waiting: deliveries retrying an outage are left unacked too. */
  stopping: AbortSignal;
  /** Where a Temporal or Postgres outage met while starting a run is reported, for /readyz. */
  outages?: IngestOutages;
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
export class DeliveryHandler {
  constructor(
    private readonly options: DeliveryOptions,
    private readonly deps: DeliveryDeps,
  ) {}

  private async decide(message: ConsumeMessage, receivedAtMs: number): Promise<Verdict> {
    const parsed = parseTransaction(
      {
        body: message.content,
        contentType: message.properties.contentType as string | undefined,
        contentEncoding: message.properties.contentEncoding as string | undefined,
      },
      this.options.maxMessageBytes,
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
    await this.deps.throttle.whenOpen(this.deps.draining);
    const outcome = await this.retrying('start IngestTransaction', async () => {
      if (!(await this.deps.providers.has(transaction.providerId))) return 'unknown_provider' as const;
      const started = performance.now();
      const result = await startIngest(this.deps.client, {
        taskQueue: this.options.taskQueue,
        workflowId,
        transaction,
        receivedAtMs,
        bodySha256,
        original: originalMessage(message),
        eager: this.options.eagerStart,
      });
      this.deps.outages?.clear('temporal');
      this.deps.metrics.workflowStartSeconds.observe((performance.now() - started) / 1000);
      if (result === 'started') this.deps.throttle.noteStart();
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
   * MAX_UNEXPECTED_ATTEMPTS times. Rethrows on shutdown or when those attempts are used up. An outage
   * of Temporal or Postgres is reported to IngestOutages (for /readyz) while it lasts.
   */
  private async retrying<T>(what: string, attempt: () => Promise<T>): Promise<T> {
    let unexpected = 0;
    for (let attemptNumber = 1; ; attemptNumber++) {
      try {
        return await attempt();
      } catch (error) {
        const dependency = outageDependency(error);
        const outage = dependency !== undefined;
        if (dependency === 'temporal' || dependency === 'postgres')
          this.deps.outages?.report(dependency, (error as Error).message);
        if (this.deps.stopping.aborted || (!outage && ++unexpected >= MAX_UNEXPECTED_ATTEMPTS)) throw error;
        this.deps.log.warn(
          { err: (error as Error).message, attempt: attemptNumber, outage },
          `cannot ${what} yet; retrying`,
        );
        await sleep(Math.min(100 * 2 ** (attemptNumber - 1), 5_000), undefined, {
          signal: this.deps.stopping,
        });
      }
    }
  }

  private settle(raw: ConfirmChannel, message: ConsumeMessage, action: 'ack' | 'requeue'): boolean {
    try {
      if (action === 'ack') raw.ack(message);
      else raw.nack(message, false, true);
      return true;
    } catch (error) {
      // The channel has closed: the broker redelivers the message; the workflow ID or ledger absorbs it.
      this.deps.log.warn(
        { err: (error as Error).message, action },
        'channel closed before settling; the broker will redeliver',
      );
      return false;
    }
  }

  /** Nacks with requeue; false if the channel had closed (the broker requeues it anyway). */
  private requeue(raw: ConfirmChannel, message: ConsumeMessage, reason: string, error: unknown): boolean {
    if (this.deps.stopping.aborted || !this.settle(raw, message, 'requeue')) return false;
    this.deps.metrics.messagesRequeued.inc({ reason });
    this.deps.log.warn(
      { reason, err: (error as Error).message, messageId: message.properties.messageId as unknown },
      'message requeued',
    );
    return true;
  }

  private async deadLetter(raw: ConfirmChannel, message: ConsumeMessage, code: string, reason: string) {
    try {
      await this.retrying('publish a dead letter', async () => {
        // Without the queue (deleted while we run) the broker would confirm the dead letter and drop it.
        await ensureQueue(this.deps.connection.connection, this.options.deadLetterQueue);
        await publishDeadLetter(raw, this.options.deadLetterQueue, message, code, reason);
      });
    } catch (error) {
      this.deps.log.error({ code, err: (error as Error).message }, 'cannot publish a dead letter');
      // Held a little before going back, so a full dead-letter queue is not a hot loop.
      const held = await sleep(REFUSED_REQUEUE_DELAY_MS, true, { signal: this.deps.stopping }).catch(
        () => false,
      );
      // Still on an open channel: the broker itself refused it (not a lost connection).
      if (held && this.requeue(raw, message, 'dead_letter_refused', error))
        this.deps.onDeadLetterOutcome(false);
      return;
    }
    this.deps.onDeadLetterOutcome(true);
    if (this.settle(raw, message, 'ack')) this.deps.metrics.messagesDeadLettered.inc({ code });
    this.deps.log.warn(
      { code, reason, messageId: message.properties.messageId as unknown },
      'message dead-lettered',
    );
  }

  /** Decides what the delivery becomes and settles it; never rejects. */
  async handle(raw: ConfirmChannel, message: ConsumeMessage): Promise<void> {
    const receivedAtMs = Date.now();
    this.deps.metrics.messagesConsumed.inc();
    let verdict: Verdict;
    try {
      verdict = await this.decide(message, receivedAtMs);
    } catch (error) {
      // Shutting down: left unacked, the broker redelivers it when the channel closes.
      if (this.deps.stopping.aborted || this.deps.draining.aborted) return;
      if (!message.fields.redelivered) {
        this.requeue(raw, message, 'processing_error', error);
        return;
      }
      verdict = {
        code: 'processing_error',
        reason: `failed again after redelivery: ${(error as Error).message}`,
      };
    }
    if ('ack' in verdict) {
      if (this.settle(raw, message, 'ack')) this.deps.metrics.messagesAcked.inc({ outcome: verdict.ack });
      return;
    }
    await this.deadLetter(raw, message, verdict.code, verdict.reason.slice(0, 300));
  }
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
