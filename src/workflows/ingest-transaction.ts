import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  isCancellation,
  patched,
  proxyActivities,
  proxyLocalActivities,
  workflowInfo,
} from '@temporalio/workflow';
import type { Activities, OriginalMessage, RecordTransactionResult } from '../activities/index.js';

export interface IngestTransactionInput {
  providerId: number;
  /** Exact decimal literal from the message. */
  value: string;
  receivedAtMs?: number;
  /** sha256 (hex) of the message body: a reused message_id with another body is refused. */
  bodySha256?: string;
  /** The message as received, so a transaction that cannot be recorded reaches the dead-letter queue. */
  original?: OriginalMessage;
}

/** Failures that no retry fixes, and the dead-letter reason code each one gets. */
const DEAD_LETTER_CODES: Record<string, string> = {
  UnknownProvider: 'unknown_provider',
  InvalidTransaction: 'invalid_transaction',
  MessageIdConflict: 'message_id_conflict',
  RefusedByDatabase: 'refused_by_database',
  InsertFailed: 'processing_error',
};

// A local activity: one insert needs no task-queue round trip (measured in docs/BENCHMARKS.md).
// Retries through a Postgres outage for as long as it lasts (the activity warns after 2 minutes); a
// row Postgres refuses, or a reused message_id, fails at once; any other error after 5 attempts.
const { recordTransaction } = proxyLocalActivities<Activities>({
  startToCloseTimeout: '10 seconds',
  localRetryThreshold: '10 seconds',
  retry: {
    initialInterval: '200 milliseconds',
    backoffCoefficient: 2,
    maximumInterval: '10 seconds',
    nonRetryableErrorTypes: Object.keys(DEAD_LETTER_CODES),
  },
});

// Retried until RabbitMQ confirms the dead letter: the message was acked, this is its only copy.
const { deadLetterTransaction } = proxyActivities<Activities>({
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute' },
});

/**
 * Writes one queued transaction to historical_transactions, exactly once per workflow ID. If it can
 * never be written, or an operator cancels the run first, the original message goes to the
 * dead-letter queue and the run fails (or ends cancelled) with the cause.
 */
export async function IngestTransaction(input: IngestTransactionInput): Promise<RecordTransactionResult> {
  const { workflowId } = workflowInfo();
  const { original, ...transaction } = input;
  // Once begun, a dead letter is finished even if the run is cancelled meanwhile: it is the message's only copy.
  const deadLetter = (message: OriginalMessage, code: string, reason: string) =>
    CancellationScope.nonCancellable(() =>
      deadLetterTransaction({ original: message, code, reason, workflowId }),
    );
  try {
    return await recordTransaction({ ingestKey: workflowId, ...transaction });
  } catch (error) {
    // Runs cancelled before this existed ended without a dead letter; they still do on replay.
    if (isCancellation(error) && original && patched('dead-letter-on-cancel')) {
      await deadLetter(
        original,
        'cancelled',
        'the IngestTransaction run was cancelled before its row was written',
      );
      throw error;
    }
    // A local activity's failure arrives as the activity's own ApplicationFailure, unwrapped.
    const failure = error instanceof ActivityFailure ? error.cause : error;
    const cause = failure instanceof ApplicationFailure ? failure : undefined;
    const code = cause ? DEAD_LETTER_CODES[cause.type ?? ''] : undefined;
    // Runs recorded before dead-lettering existed failed here; they still do on replay.
    if (!cause || !code || !original || !patched('dead-letter-after-ack')) throw error;
    await deadLetter(original, code, cause.message);
    throw ApplicationFailure.nonRetryable(
      `${cause.message} (dead-lettered as ${code})`,
      cause.type ?? 'Unrecordable',
    );
  }
}
