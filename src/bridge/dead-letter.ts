import type { ConfirmChannel, ConsumeMessage } from 'amqplib';
import {
  keptHeaders,
  reasonHeaders,
  republishOptions,
  REASON_CODE_HEADER,
  REASON_HEADER,
} from '../rabbitmq/dead-letters.js';

export { REASON_CODE_HEADER, REASON_HEADER };

/**
 * Publishes the message, body and properties untouched, to the dead-letter queue with the reason in
 * headers, and resolves only once the broker has confirmed it (rejects if the broker refuses it).
 */
export async function publishDeadLetter(
  channel: ConfirmChannel,
  queue: string,
  message: ConsumeMessage,
  code: string,
  reason: string,
): Promise<void> {
  const { properties } = message;
  await new Promise<void>((resolve, reject) => {
    channel.sendToQueue(
      queue,
      message.content,
      republishOptions(properties, {
        ...keptHeaders(properties.headers),
        ...reasonHeaders(code, reason),
        'x-original-queue': message.fields.routingKey,
        'x-original-redelivered': message.fields.redelivered,
      }),
      (error: unknown) =>
        error
          ? reject(error instanceof Error ? error : new Error('dead letter refused by the broker'))
          : resolve(),
    );
  });
}
