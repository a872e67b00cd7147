import type { AmqpConnectionManager, ChannelWrapper } from 'amqp-connection-manager';
import type { Channel, ChannelModel, ConfirmChannel, MessageProperties, Options } from 'amqplib';

/** Headers every dead letter carries: why it was refused. */
export const REASON_HEADER = 'x-balance-sync-reason';
export const REASON_CODE_HEADER = 'x-balance-sync-reason-code';
/** On dead letters written after the ack: the IngestTransaction workflow that refused the message. */
export const WORKFLOW_ID_HEADER = 'x-balance-sync-workflow-id';
const MAX_COPIED_HEADER_BYTES = 16 * 1024;

/**
 * Publish options that keep a consumed message's properties, persistent, with the given headers.
 * Used for dead letters and for replaying them, so a message survives the round trip unchanged.
 */
export function republishOptions(
  properties: Partial<MessageProperties>,
  headers: Record<string, unknown>,
): Options.Publish {
  return {
    contentType: properties.contentType as string | undefined,
    contentEncoding: properties.contentEncoding as string | undefined,
    messageId: properties.messageId as string | undefined,
    correlationId: properties.correlationId as string | undefined,
    replyTo: properties.replyTo as string | undefined,
    timestamp: properties.timestamp as number | undefined,
    type: properties.type as string | undefined,
    appId: properties.appId as string | undefined,
    priority: properties.priority as number | undefined,
    persistent: true,
    headers,
  };
}

/**
 * The producer's headers, if they fit: amqplib encodes headers into a 64 KiB frame buffer, so
 * oversized producer headers are dropped (and flagged) rather than making the dead letter unpublishable.
 */
export function keptHeaders(headers: Record<string, unknown> | undefined): Record<string, unknown> {
  const original = headers ?? {};
  return Buffer.byteLength(JSON.stringify(original)) <= MAX_COPIED_HEADER_BYTES
    ? original
    : { 'x-balance-sync-original-headers-dropped': true };
}

/** The headers that say why a message was dead-lettered, added to its own. */
export function reasonHeaders(code: string, reason: string): Record<string, unknown> {
  return {
    [REASON_HEADER]: reason,
    [REASON_CODE_HEADER]: code,
    'x-balance-sync-dead-lettered-at': new Date().toISOString(),
  };
}

/**
 * Declares `queue` (durable, no arguments) only if it does not exist, so a dead-letter queue an
 * operator declared with arguments (a max length, an overflow policy) is used as it is. Uses
 * throwaway channels: a failed declaration closes the channel it was made on.
 */
export async function ensureQueue(connection: ChannelModel | undefined, queue: string): Promise<void> {
  if (!connection) return;
  const probe = async (declare: (channel: Channel) => Promise<unknown>) => {
    const channel = await connection.createChannel();
    channel.on('error', () => undefined);
    try {
      await declare(channel);
      return true;
    } catch {
      return false;
    } finally {
      await channel.close().catch(() => undefined);
    }
  };
  if (await probe((channel) => channel.checkQueue(queue))) return;
  await probe((channel) => channel.assertQueue(queue, { durable: true }));
}

/** Publishes to the dead-letter queue; resolves once the broker confirmed the message. */
export interface DeadLetterPublisher {
  publish(body: Buffer, options: Options.Publish): Promise<void>;
  /** False while the last publish failed (the queue refused it, or RabbitMQ is unreachable): for readiness. */
  accepting(): boolean;
  close(): Promise<void>;
}

/**
 * A confirm channel on the process's RabbitMQ connection, re-opened by the connection manager after a
 * reconnect. A publish waits for the connection up to `timeoutMs`, then rejects (the caller retries).
 */
export function createDeadLetterPublisher(
  connection: AmqpConnectionManager,
  queue: string,
  timeoutMs = 10_000,
): DeadLetterPublisher {
  const channel: ChannelWrapper = connection.createChannel({
    confirm: true,
    name: 'dead letters',
    setup: async (_raw: ConfirmChannel) => ensureQueue(connection.connection, queue),
  });
  channel.on('error', () => undefined);
  let accepting = true;
  return {
    async publish(body, options) {
      try {
        // Without a queue the broker would confirm the message and drop it: make sure it exists.
        await ensureQueue(connection.connection, queue);
        await channel.sendToQueue(queue, body, { ...options, timeout: timeoutMs });
        accepting = true;
      } catch (error) {
        accepting = false;
        throw error;
      }
    },
    accepting: () => accepting,
    close: () => channel.close(),
  };
}
