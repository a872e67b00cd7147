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

/** A publish the broker did not confirm in time (blocked by a resource alarm, or unreachable). */
export class ConfirmTimeoutError extends Error {
  override name = 'ConfirmTimeoutError';
}

/**
 * A confirm channel on the publishing connection, re-opened by the connection manager after a
 * reconnect. A publish (making sure the queue exists, sending, the broker's confirm) rejects with
 * ConfirmTimeoutError after `timeoutMs`; the caller decides whether to retry.
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
  const send = async (body: Buffer, options: Options.Publish) => {
    // Without a queue the broker would confirm the message and drop it: make sure it exists.
    await ensureQueue(connection.connection, queue);
    // The manager's own timeout drops the message from its queue, so it is not sent later.
    await channel.sendToQueue(queue, body, { ...options, timeout: timeoutMs });
  };
  return {
    async publish(body, options) {
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new ConfirmTimeoutError(`no publisher confirm within ${timeoutMs} ms`)),
          timeoutMs,
        );
      });
      try {
        await Promise.race([send(body, options), timedOut]);
        accepting = true;
      } catch (error) {
        accepting = false;
        if ((error as Error).message === 'timeout')
          throw new ConfirmTimeoutError(`no publisher confirm within ${timeoutMs} ms`);
        throw error;
      } finally {
        clearTimeout(timer);
      }
    },
    accepting: () => accepting,
    close: () => channel.close(),
  };
}

/** A header value as JSON can carry it: byte arrays as {"$bytes": base64}, tables and arrays recursively. */
export type EncodedHeader =
  string | number | boolean | null | EncodedHeader[] | { [key: string]: EncodedHeader };

const BYTES = '$bytes';
const TABLE = '$table';

/**
 * Encodes AMQP headers (as amqplib decodes them) for a JSON payload, losing no value: Buffers become
 * {"$bytes": base64}; a table that itself has only a "$bytes" or "$table" key is wrapped in {"$table": …}.
 * decodeHeaders inverts it. Integer widths are not kept: amqplib re-encodes numbers by their value.
 */
export function encodeHeaders(headers: Record<string, unknown>): Record<string, EncodedHeader> {
  return Object.fromEntries(Object.entries(headers).map(([key, value]) => [key, encodeValue(value)]));
}

function encodeValue(value: unknown): EncodedHeader {
  if (Buffer.isBuffer(value)) return { [BYTES]: value.toString('base64') };
  if (Array.isArray(value)) return value.map(encodeValue);
  if (value instanceof Date) return value.getTime();
  if (value !== null && typeof value === 'object') {
    const table = encodeHeaders(value as Record<string, unknown>);
    return isMarker(table) ? { [TABLE]: table } : table;
  }
  if (typeof value === 'bigint') return value.toString();
  if (value === undefined) return null;
  return value as string | number | boolean | null;
}

/** The inverse of encodeHeaders; plain scalars (what older workflow inputs carry) pass through. */
export function decodeHeaders(headers: Record<string, EncodedHeader>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(headers).map(([key, value]) => [key, decodeValue(value)]));
}

function decodeValue(value: EncodedHeader): unknown {
  if (Array.isArray(value)) return value.map(decodeValue);
  if (value === null || typeof value !== 'object') return value;
  if (isMarker(value) && typeof value[BYTES] === 'string') return Buffer.from(value[BYTES], 'base64');
  if (isMarker(value) && TABLE in value) return decodeHeaders(value[TABLE] as Record<string, EncodedHeader>);
  return decodeHeaders(value);
}

function isMarker(table: Record<string, unknown>): boolean {
  const keys = Object.keys(table);
  return keys.length === 1 && (keys[0] === BYTES || keys[0] === TABLE);
}
