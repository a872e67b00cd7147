import type { ConsumeMessage } from 'amqplib';
import {
  keptHeaders,
  reasonHeaders,
  republishOptions,
  REASON_CODE_HEADER,
  REASON_HEADER,
  WORKFLOW_ID_HEADER,
  type DeadLetterPublisher,
} from '../rabbitmq/dead-letters.js';

export { REASON_CODE_HEADER, REASON_HEADER };

/**
 * Publishes the message, body and properties untouched, to the dead-letter queue with the reason in
 * headers (and the random workflow ID of a message without message_id, so every copy replays as one), on the publishing connection; resolves once the broker has confirmed it, rejects if the
 * broker refuses it or does not confirm in time (ConfirmTimeoutError).
 */
export async function publishDeadLetter(
  publisher: DeadLetterPublisher,
  message: ConsumeMessage,
  code: string,
  reason: string,
  workflowId?: string,
): Promise<void> {
  const { properties } = message;
  await publisher.publish(
    message.content,
    republishOptions(properties, {
      ...keptHeaders(properties.headers),
      ...(workflowId ? { [WORKFLOW_ID_HEADER]: workflowId } : {}),
      ...reasonHeaders(code, reason),
      'x-original-queue': message.fields.routingKey,
      'x-original-redelivered': message.fields.redelivered,
    }),
  );
}
