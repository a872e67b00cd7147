import type { ConfirmChannel, ConsumeMessage } from 'amqplib';
import type { DeadLetterCode } from './parse-transaction.js';
import { republishOptions } from './republish-options.js';

export const REASON_HEADER = 'x-balance-sync-reason';
export const REASON_CODE_HEADER = 'x-balance-sync-reason-code';
const MAX_COPIED_HEADER_BYTES = 16 * 1024;

/**
 * Publishes the message, body and properties untouched, to the dead-letter queue with the reason in
 * headers, and resolves only once the broker has confirmed it.
 */
export async function publishDeadLetter(
  channel: ConfirmChannel,
  queue: string,
  message: ConsumeMessage,
  code: DeadLetterCode,
  reason: string,
): Promise<void> {
  const { properties } = message;
  // amqplib encodes headers into a 64 KiB frame buffer: oversized producer headers are dropped
  // (and flagged) rather than making the dead letter itself unpublishable.
  const original = (properties.headers ?? {}) as Record<string, unknown>;
  const keepOriginal = Buffer.byteLength(JSON.stringify(original)) <= MAX_COPIED_HEADER_BYTES;
  await new Promise<void>((resolve, reject) => {
    channel.sendToQueue(
      queue,
      message.content,
      republishOptions(properties, {
        ...(keepOriginal ? original : { 'x-balance-sync-original-headers-dropped': true }),
        [REASON_HEADER]: reason,
        [REASON_CODE_HEADER]: code,
        'x-balance-sync-dead-lettered-at': new Date().toISOString(),
        'x-original-queue': message.fields.routingKey,
        'x-original-redelivered': message.fields.redelivered,
      }),
      (error: unknown) =>
        error ? reject(error instanceof Error ? error : new Error('dead letter not confirmed')) : resolve(),
    );
  });
}
