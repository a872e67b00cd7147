import { ApplicationFailure, log } from '@temporalio/activity';
import type { AppMetrics } from '../metrics.js';
import {
  decodeHeaders,
  reasonHeaders,
  republishOptions,
  WORKFLOW_ID_HEADER,
  type DeadLetterPublisher,
  type EncodedHeader,
} from '../rabbitmq/dead-letters.js';

/** A consumed message as the bridge received it, carried in the workflow input for a dead letter. */
export interface OriginalMessage {
  /** The body's exact bytes, base64. */
  bodyBase64: string;
  /** AMQP properties (content type, message_id, ...), unset ones omitted. */
  properties: Record<string, string | number>;
  /** The producer's headers, every value (encodeHeaders: byte arrays as base64, tables and arrays as JSON). */
  headers: Record<string, EncodedHeader>;
}

export interface DeadLetterTransactionInput {
  original: OriginalMessage;
  /** Reason code, e.g. unknown_provider, invalid_transaction, message_id_conflict. */
  code: string;
  reason: string;
  /** The workflow giving up on the message; a header on the dead letter. */
  workflowId: string;
}

/** Publishes the original message with the reason headers and the workflow ID; resolves once confirmed. */
export async function publishOriginal(publisher: DeadLetterPublisher, input: DeadLetterTransactionInput) {
  const { original } = input;
  await publisher.publish(
    Buffer.from(original.bodyBase64, 'base64'),
    republishOptions(original.properties, {
      ...decodeHeaders(original.headers),
      ...reasonHeaders(input.code, input.reason),
      [WORKFLOW_ID_HEADER]: input.workflowId,
    }),
  );
}

/**
 * Publishes a message that a workflow could not record to the dead-letter queue, with its original
 * body and properties and the reason, once the broker confirms it. A retried attempt may publish a
 * second copy: both carry the same message_id (if the original had one) and workflow-id header.
 */
export function createDeadLetterTransaction(publisher: DeadLetterPublisher | undefined, metrics: AppMetrics) {
  return async function deadLetterTransaction(input: DeadLetterTransactionInput): Promise<void> {
    if (!publisher)
      throw ApplicationFailure.retryable('this worker has no dead-letter publisher', 'NoPublisher');
    try {
      await publishOriginal(publisher, input);
    } catch (error) {
      // Retried until it is accepted; meanwhile the run stays open, counted here and in /readyz.
      metrics.deadLetterPublishFailures.inc({ code: input.code });
      log.error('cannot publish a dead letter after the ack; retrying', {
        code: input.code,
        err: (error as Error).message,
      });
      throw error;
    }
    metrics.messagesDeadLettered.inc({ code: input.code });
  };
}
