import type { Client } from '@temporalio/client';
import type { ConfirmChannel, ConsumeMessage } from 'amqplib';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { OriginalMessage } from '../activities/index.js';
import { outageDependency } from '../failures.js';
import type { IngestOutages } from '../ingest-outages.js';
import type { AppMetrics } from '../metrics.js';
import {
  ConfirmTimeoutError,
  encodeHeaders,
  keptHeaders,
  republishOptions,
  WORKFLOW_ID_HEADER,
  type ConfirmedPublisher,
  type DeadLetterPublisher,
} from '../rabbitmq/dead-letters.js';
import { publishDeadLetter } from './dead-letter.js';
import { parseTransaction } from './parse-transaction.js';
import type { ProviderDirectory } from './provider-directory.js';
import { ingestWorkflowId, startIngest, type StartOutcome } from './start-ingest.js';

export interface DeliveryOptions {
  deadLetterQueue: string;
  maxMessageBytes: number;
  taskQueue: string;
  eagerStart: boolean;
  /** Default MAX_HOLD_MS (tests shorten it). */
  maxHoldMs?: number;
  /** Default COPY_BOUND_MS (tests shorten it). */
  copyBoundMs?: number;
}

export interface DeliveryDeps {
  /** Publishes dead letters on the publishing connection, with a confirm timeout. */
  deadLetters: DeadLetterPublisher;
  /**
   * Publishes to the incoming queue, confirmed: a message handed back after its start was sent goes
   * back as a copy carrying its workflow ID, so its next start finds the run rather than adding one.
   */
  requeueCopies: ConfirmedPublisher;
  client: Client;
  providers: ProviderDirectory;
  /** Resolves once starts may go ahead (throttle open, Temporal answering); rejects when `signal` aborts. */
  startsAllowed(signal: AbortSignal): Promise<void>;
  metrics: AppMetrics;
  log: Logger;
  /** Aborted when shutdown begins: deliveries waiting for the throttle are left unacked. */
  draining: AbortSignal;
  /** Aborted when shutdown stops waiting: deliveries retrying an outage are left unacked too. */
  stopping: AbortSignal;
  /** Where a Temporal or Postgres outage met while starting a run is reported, for /readyz. */
  outages?: IngestOutages;
  /** Told of each new IngestTransaction started (for the throttle's count). */
  onStarted(): void;
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
/** The longest a delivery waits (throttle, outage) before it is requeued: far below consumer_timeout (30 min). */
export const MAX_HOLD_MS = 30_000;
/** How long a started message without message_id is retried as a copy carrying its ID, before a plain requeue. */
const COPY_BOUND_MS = 120_000;
/** A start Temporal has not answered by then fails (DEADLINE_EXCEEDED, an outage) and is retried. */
const START_DEADLINE_MS = 10_000;
const MAX_WORKFLOW_ID_LENGTH = 250;

/**
 * Decides what each delivery becomes, and settles it. Every delivery ends one of four ways: acked
 * (Temporal has the start, or the dead letter is confirmed); handed back (an unexpected error the
 * first time, a refused or unconfirmed dead letter, held past MAX_HOLD_MS by the throttle or an
 * outage, or shutdown): nacked and requeued, or, once a start left under a random workflow ID, acked
 * after a confirmed copy carrying that ID; let go when its channel closes (released, counted; the
 * broker redelivers it and nothing is started for it any more); or left unacked at shutdown. A
 * message that fails unexpectedly again after its redelivery (or as a copy) is dead-lettered as
 * processing_error, so a poison message never loops.
 */
export class DeliveryHandler {
  constructor(
    private readonly options: DeliveryOptions,
    private readonly deps: DeliveryDeps,
  ) {}

  private async decide(
    message: ConsumeMessage,
    receivedAtMs: number,
    hold: AbortSignal,
    progress: Progress,
  ): Promise<Verdict> {
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
    const replayedId = message.properties.headers?.[WORKFLOW_ID_HEADER] as unknown;
    if (!messageId && replayedId !== undefined && !isIngestWorkflowId(replayedId)) {
      return {
        code: 'invalid_workflow_id',
        reason: `${WORKFLOW_ID_HEADER} must be a string starting with ingest- of at most ${MAX_WORKFLOW_ID_LENGTH} characters`,
      };
    }
    const { transaction } = parsed;
    // A replayed dead letter keeps the workflow ID it had, so replaying both copies records one row.
    const workflowId = messageId
      ? ingestWorkflowId(messageId)
      : ((replayedId as string | undefined) ?? (progress.randomId = ingestWorkflowId()));
    const bodySha256 = createHash('sha256').update(message.content).digest('hex');
    const waiting = AbortSignal.any([this.deps.draining, hold]);
    const outcome = await this.retrying('start IngestTransaction', hold, async () => {
      await this.deps.startsAllowed(waiting);
      if (!(await this.deps.providers.has(transaction.providerId))) return 'unknown_provider' as const;
      // The last moment to let go: a start once sent cannot be recalled.
      hold.throwIfAborted();
      progress.startSent = true;
      const started = performance.now();
      const result = await this.deps.client.withDeadline(Date.now() + START_DEADLINE_MS, () =>
        startIngest(this.deps.client, {
          taskQueue: this.options.taskQueue,
          workflowId,
          transaction,
          receivedAtMs,
          bodySha256,
          original: originalMessage(message),
          eager: this.options.eagerStart,
        }),
      );
      this.deps.outages?.clear('temporal');
      this.deps.metrics.workflowStartSeconds.observe((performance.now() - started) / 1000);
      if (result.outcome === 'started') {
        this.deps.onStarted();
        this.deps.metrics.workflowStarts.inc({ dispatch: result.eagerly ? 'eager' : 'task_queue' });
      }
      return result.outcome;
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
  private async retrying<T>(what: string, hold: AbortSignal, attempt: () => Promise<T>): Promise<T> {
    const until = AbortSignal.any([this.deps.stopping, hold]);
    let unexpected = 0;
    for (let attemptNumber = 1; ; attemptNumber++) {
      try {
        return await attempt();
      } catch (error) {
        const dependency = outageDependency(error);
        const outage = dependency !== undefined;
        if (dependency === 'temporal' || dependency === 'postgres')
          this.deps.outages?.report(dependency, (error as Error).message);
        if (until.aborted || (!outage && ++unexpected >= MAX_UNEXPECTED_ATTEMPTS)) throw error;
        this.deps.log.warn(
          { err: (error as Error).message, attempt: attemptNumber, outage },
          `cannot ${what} yet; retrying`,
        );
        await sleep(Math.min(100 * 2 ** (attemptNumber - 1), 5_000), undefined, { signal: until });
      }
    }
  }

  private settle(raw: ConfirmChannel, message: ConsumeMessage, action: 'ack' | 'requeue'): boolean {
    try {
      if (action === 'ack') raw.ack(message);
      else raw.nack(message, false, true);
      return true;
    } catch (error) {
      // The channel has closed: the broker redelivers the message; with a message_id (or a workflow ID
      // header) its workflow ID and the ledger absorb it; without, the caller counts a possible duplicate.
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

  /** Lets go of a delivery whose channel closed: no ack is possible; the broker redelivers it. */
  private release(reason: string): void {
    this.deps.metrics.deliveriesReleased.inc({ reason });
    this.deps.log.warn({ reason }, 'delivery released: its channel closed; the broker redelivers it');
  }

  /**
   * Hands a delivery back to the queue. Once a start was sent under a random workflow ID (`pin`: no
   * message_id), Temporal may have the run, and a plain requeue would come back under a new ID: it
   * goes back instead as a confirmed copy carrying that ID (WORKFLOW_ID_HEADER), and only then is
   * the original acked, so its next start finds the run. Copies published twice carry the same ID.
   */
  private async handBack(delivery: Delivery, reason: string, error: unknown, pin: string | undefined) {
    const { raw, message, channelClosed } = delivery;
    if (pin === undefined) {
      this.requeue(raw, message, reason, error);
      return;
    }
    const copyError = await this.publishCopy(delivery, reason, pin);
    if (copyError) {
      if (channelClosed.aborted || this.deps.stopping.aborted) {
        this.possibleDuplicate('closed_after_start', pin, copyError);
        if (channelClosed.aborted) this.release('closed_after_start');
        return;
      }
      // An unconfirmed copy may still be kept: then both come back, under two IDs.
      const cause = copyError instanceof ConfirmTimeoutError ? 'copy_unconfirmed' : 'copy_refused';
      this.possibleDuplicate(cause, pin, copyError);
      this.requeue(raw, message, reason, error);
      return;
    }
    if (!this.settle(raw, message, 'ack')) {
      this.possibleDuplicate('closed_after_copy', pin, error);
      this.release('closed_after_start');
      return;
    }
    this.deps.metrics.messagesRequeued.inc({ reason });
    this.deps.log.warn(
      { reason, err: (error as Error).message, workflowId: pin },
      'message requeued as a copy carrying its workflow ID',
    );
  }

  /**
   * Publishes the copy carrying `pin`, retrying every failure (each copy carries the same ID, so a
   * repeat is harmless) for up to COPY_BOUND_MS, while the channel is open and no shutdown began
   * (then once). Returns the last error, or undefined once the broker confirmed a copy.
   */
  private async publishCopy(delivery: Delivery, reason: string, pin: string): Promise<Error | undefined> {
    const { message, channelClosed } = delivery;
    const bound = AbortSignal.any([
      channelClosed,
      this.deps.stopping,
      AbortSignal.timeout(this.options.copyBoundMs ?? COPY_BOUND_MS),
    ]);
    const headers = {
      ...keptHeaders(message.properties.headers),
      [WORKFLOW_ID_HEADER]: pin,
      [REQUEUED_HEADER]: reason,
    };
    for (let attempt = 1; ; attempt++) {
      try {
        await this.deps.requeueCopies.publish(message.content, republishOptions(message.properties, headers));
        return undefined;
      } catch (error) {
        if (bound.aborted) return error as Error;
        this.deps.log.warn(
          { err: (error as Error).message, attempt, workflowId: pin },
          'cannot requeue a started message with its workflow ID yet; retrying',
        );
        const waited = await sleep(Math.min(100 * 2 ** (attempt - 1), 5_000), true, { signal: bound }).catch(
          () => false,
        );
        if (!waited) return error as Error;
      }
    }
  }

  /** A started message goes back without its workflow ID: its redelivery may record a second row. */
  private possibleDuplicate(cause: string, workflowId: string, error: unknown): void {
    this.deps.metrics.possibleDuplicates.inc({ cause });
    this.deps.log.error(
      { cause, workflowId, err: (error as Error).message },
      'a started message goes back to the queue without its workflow ID: a second row is possible',
    );
  }

  /**
   * Dead-letters the delivery, then acks it. `pin`, a message's random workflow ID, goes with the dead
   * letter and with the copy handed back when the broker does not confirm it in time (it may still
   * keep it), so the two dead letters such a delivery can leave replay as one row.
   */
  private async deadLetter(delivery: Delivery, code: string, reason: string, pin?: string) {
    const { raw, message, channelClosed } = delivery;
    let timedOut: ConfirmTimeoutError | undefined;
    try {
      await this.retrying('publish a dead letter', channelClosed, async () => {
        try {
          await publishDeadLetter(this.deps.deadLetters, message, code, reason, pin);
        } catch (error) {
          // Not retried while held: the delivery goes back to the queue (a blocked connection).
          if (!(error instanceof ConfirmTimeoutError)) throw error;
          timedOut = error;
        }
      });
    } catch (error) {
      this.deps.log.error({ code, err: (error as Error).message }, 'cannot publish a dead letter');
      if (channelClosed.aborted) return this.release('channel_closed');
      // Held a little before going back, so a full dead-letter queue is not a hot loop.
      const held = await sleep(REFUSED_REQUEUE_DELAY_MS, true, {
        signal: AbortSignal.any([this.deps.stopping, channelClosed]),
      }).catch(() => false);
      // Still on an open channel: the broker itself refused it (not a lost connection).
      if (!held) return;
      this.deps.onDeadLetterOutcome(false);
      if (pin) await this.handBack(delivery, 'dead_letter_refused', error, pin);
      else this.requeue(raw, message, 'dead_letter_refused', error);
      return;
    }
    if (timedOut) {
      this.deps.onDeadLetterOutcome(false);
      if (pin) await this.handBack(delivery, 'confirm_timeout', timedOut, pin);
      else if (!this.requeue(raw, message, 'confirm_timeout', timedOut)) this.release('channel_closed');
      return;
    }
    this.deps.onDeadLetterOutcome(true);
    if (this.settle(raw, message, 'ack')) this.deps.metrics.messagesDeadLettered.inc({ code });
    this.deps.log.warn(
      { code, reason, messageId: message.properties.messageId as unknown },
      'message dead-lettered',
    );
  }

  /**
   * Decides what the delivery becomes and settles it; never rejects. `channelClosed` aborts when its
   * channel closes: every wait then stops, and the delivery is let go without starting anything.
   */
  async handle(raw: ConfirmChannel, message: ConsumeMessage, channelClosed: AbortSignal): Promise<void> {
    const receivedAtMs = Date.now();
    this.deps.metrics.messagesConsumed.inc();
    const progress: Progress = { startSent: false };
    const heldTooLong = AbortSignal.timeout(this.options.maxHoldMs ?? MAX_HOLD_MS);
    let verdict: Verdict;
    try {
      verdict = await this.decide(
        message,
        receivedAtMs,
        AbortSignal.any([channelClosed, heldTooLong]),
        progress,
      );
    } catch (error) {
      // A start once sent may still be accepted: under a random ID, its redelivery may be recorded again.
      const pin = progress.startSent ? progress.randomId : undefined;
      // The channel closed: the broker already has the message back (the duplicate window, counted).
      if (channelClosed.aborted) {
        if (pin) this.possibleDuplicate('closed_after_start', pin, error);
        return this.release(progress.startSent ? 'closed_after_start' : 'channel_closed');
      }
      const delivery = { raw, message, channelClosed };
      // Shutting down: left unacked, the broker redelivers it when the channel closes; one whose
      // start left under a random ID goes back as a copy carrying it.
      if (this.deps.stopping.aborted || this.deps.draining.aborted) {
        if (pin) await this.handBack(delivery, 'shutdown', error, pin);
        return;
      }
      const handBack = heldTooLong.aborted
        ? 'held_too_long'
        : !wasRedelivered(message)
          ? 'processing_error'
          : undefined;
      if (handBack) {
        await this.handBack(delivery, handBack, error, pin);
        return;
      }
      verdict = {
        code: 'processing_error',
        reason: `failed again after redelivery: ${(error as Error).message}`,
      };
    }
    if ('ack' in verdict) {
      if (this.settle(raw, message, 'ack')) this.deps.metrics.messagesAcked.inc({ outcome: verdict.ack });
      // The duplicate window: Temporal has the run, the broker redelivers the message.
      else if (verdict.ack === 'started') {
        if (progress.randomId)
          this.possibleDuplicate('closed_after_start', progress.randomId, new Error('the channel closed'));
        this.release('closed_after_start');
      }
      return;
    }
    await this.deadLetter(
      { raw, message, channelClosed },
      verdict.code,
      verdict.reason.slice(0, 300),
      progress.randomId,
    );
  }
}

/** Marks a copy handed back by handBack: its next delivery counts as a redelivery. */
export const REQUEUED_HEADER = 'x-balance-sync-requeued';

/** What decide() got to, for handle() to settle a failure: whether a start left, under which random ID. */
interface Progress {
  startSent: boolean;
  /** The random workflow ID of a message with no message_id and no replayed ID. */
  randomId?: string;
}

/** Redelivered by the broker, or a copy this bridge handed back (a second failure dead-letters it). */
function wasRedelivered(message: ConsumeMessage): boolean {
  return message.fields.redelivered || message.properties.headers?.[REQUEUED_HEADER] !== undefined;
}

interface Delivery {
  raw: ConfirmChannel;
  message: ConsumeMessage;
  channelClosed: AbortSignal;
}

/** A workflow ID a replayed dead letter may carry: ours, of a sane length. */
function isIngestWorkflowId(value: unknown): value is string {
  return typeof value === 'string' && value.startsWith('ingest-') && value.length <= MAX_WORKFLOW_ID_LENGTH;
}

/** The message as received, for a dead letter the workflow may have to write after the ack. */
function originalMessage(message: ConsumeMessage): OriginalMessage {
  const { headers, ...properties } = message.properties;
  return {
    bodyBase64: message.content.toString('base64'),
    properties: Object.fromEntries(
      Object.entries(properties).filter(
        ([, value]) => typeof value === 'string' || typeof value === 'number',
      ),
    ),
    headers: encodeHeaders(keptHeaders(headers)),
  };
}
