import type { AmqpConnectionManager, ChannelWrapper } from 'amqp-connection-manager';
import type { Channel, ChannelModel, ConfirmChannel, Message, MessageProperties, Options } from 'amqplib';
import pTimeout from 'p-timeout';
import type { Logger } from 'pino';

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
  if (Buffer.byteLength(JSON.stringify(original)) <= MAX_COPIED_HEADER_BYTES) return original;
  // The workflow ID stays, so that replaying this copy still records one row.
  const workflowId = original[WORKFLOW_ID_HEADER];
  return {
    'x-balance-sync-original-headers-dropped': true,
    ...(workflowId === undefined ? {} : { [WORKFLOW_ID_HEADER]: workflowId }),
  };
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
 * throwaway channels: a failed declaration closes the channel it was made on. Rejects, naming the
 * queue and the broker's reply, when the queue is missing and cannot be declared (no right to).
 */
export async function ensureQueue(connection: ChannelModel | undefined, queue: string): Promise<void> {
  if (!connection) return;
  try {
    await onThrowawayChannel(connection, (channel) => channel.checkQueue(queue));
    return;
  } catch {
    // Missing (or not ours to look at): declare it.
  }
  try {
    await onThrowawayChannel(connection, (channel) => channel.assertQueue(queue, { durable: true }));
  } catch (error) {
    throw new Error(`cannot declare queue ${queue}: ${(error as Error).message}`);
  }
}

/** Runs `use` on a channel of its own, closed afterwards: an error it causes (404, 403) closes only that channel. */
export async function onThrowawayChannel<T>(connection: ChannelModel, use: (channel: Channel) => Promise<T>) {
  const channel = await connection.createChannel();
  channel.on('error', () => undefined);
  try {
    return await use(channel);
  } finally {
    await channel.close().catch(() => undefined);
  }
}

const INEQUIVALENT_ARG =
  /inequivalent arg '([^']+)' for queue .* but current is the value '(.*)' of type '([a-z]+)'/;
const INTEGER_TYPES = new Set([
  'byte',
  'short',
  'signedint',
  'long',
  'unsignedbyte',
  'unsignedshort',
  'unsignedint',
]);
const MAX_ARGUMENT_PROBES = 16;

/**
 * The arguments `queue` was declared with, read over AMQP 0-9-1 (which has no call for it): each
 * redeclaration with the arguments learnt so far is refused with PRECONDITION_FAILED naming the next
 * one it lacks and its value, until one is accepted, which changes nothing. Needs the configure
 * permission on the queue; a cap or TTL set by a policy is not an argument and is not seen.
 */
export async function readQueueArguments(
  connection: ChannelModel,
  queue: string,
): Promise<Record<string, string | number | boolean>> {
  const args: Record<string, string | number | boolean> = {};
  for (let probe = 0; probe < MAX_ARGUMENT_PROBES; probe++) {
    try {
      await onThrowawayChannel(connection, (channel) =>
        channel.assertQueue(queue, { durable: true, arguments: { ...args } }),
      );
      return args;
    } catch (error) {
      const [, name, text, type] = INEQUIVALENT_ARG.exec((error as Error).message) ?? [];
      const value = argumentValue(text, type);
      if (name === undefined || value === undefined || name in args) throw error;
      args[name] = value;
    }
  }
  throw new Error(`more than ${MAX_ARGUMENT_PROBES} arguments on queue ${queue}`);
}

/** An argument's value as the broker's PRECONDITION_FAILED shows it; undefined for a type not read. */
function argumentValue(text: string | undefined, type: string | undefined) {
  if (text === undefined || type === undefined) return undefined;
  if (INTEGER_TYPES.has(type)) return Number(text);
  if (type === 'longstr') return text;
  if (type === 'bool') return text === 'true';
  return undefined;
}

/**
 * What in a queue's arguments deletes messages without telling the publisher: a cap whose overflow
 * is drop-head (the default), a message TTL, a queue TTL (an unconsumed queue expires), a stream's age.
 */
export function silentLosses(args: Record<string, string | number | boolean>): string[] {
  const caps = ['x-max-length', 'x-max-length-bytes'].filter((name) => args[name] !== undefined);
  const overflow = String(args['x-overflow'] ?? 'drop-head');
  const losses =
    caps.length > 0 && !overflow.startsWith('reject-publish')
      ? [`${caps.map((name) => `${name}=${String(args[name])}`).join(', ')} with x-overflow ${overflow}`]
      : [];
  for (const ttl of ['x-message-ttl', 'x-expires', 'x-max-age'])
    if (args[ttl] !== undefined) losses.push(`${ttl}=${String(args[ttl])}`);
  return losses;
}

/** Publishes to one queue; resolves once the broker confirmed the message and no queue refused it. */
export interface ConfirmedPublisher {
  publish(body: Buffer, options: Options.Publish): Promise<void>;
  /** False while the last publish failed (the queue refused it, or RabbitMQ is unreachable): for readiness. */
  accepting(): boolean;
  close(): Promise<void>;
}

/** The confirmed publisher whose queue is the dead-letter queue. */
export type DeadLetterPublisher = ConfirmedPublisher;

/** A publish the broker did not confirm in time (blocked by a resource alarm, or unreachable). */
export class ConfirmTimeoutError extends Error {
  override name = 'ConfirmTimeoutError';
}

/** A message the broker returned (basic.return): it reached no queue, so nothing kept it. */
export class MessageReturnedError extends Error {
  override name = 'MessageReturnedError';
}

export interface ConfirmedPublisherOptions {
  /** How long a publish (declaring, sending, the confirm) may take; default 10 s. */
  timeoutMs?: number;
  /** Where a refused declaration and a queue that can delete messages silently are warned of. */
  log?: Logger | undefined;
}

/**
 * Keeps `queue` declared for a publisher: `declare` declares it if missing (a refusal is warned of
 * once per cause, and kept as `refused()` for the publisher's errors); `warnOfSilentLosses` warns,
 * once its arguments could be read, if they can delete messages without telling the publisher.
 */
function queueKeeper(connection: AmqpConnectionManager, queue: string, log: Logger | undefined) {
  let declarationRefused: string | undefined;
  let argumentsRead = false;
  return {
    refused: () => declarationRefused,
    async declare() {
      try {
        await ensureQueue(connection.connection, queue);
        if (declarationRefused) log?.info({ queue }, 'the queue is declared again');
        declarationRefused = undefined;
      } catch (error) {
        const cause = (error as Error).message;
        // Once per cause: each failed publish says it again, and readiness carries it.
        if (cause !== declarationRefused)
          log?.warn(
            { queue, err: cause },
            'cannot declare the queue; a message it does not take is returned, and its original kept',
          );
        declarationRefused = cause;
      }
    },
    async warnOfSilentLosses() {
      const raw = connection.connection;
      if (!raw || argumentsRead) return;
      try {
        const losses = silentLosses(await readQueueArguments(raw, queue));
        argumentsRead = true;
        if (losses.length > 0)
          log?.warn(
            { queue, losses },
            'this queue can delete messages without telling us: cap it only with x-overflow reject-publish, and give it no TTL',
          );
      } catch (error) {
        log?.info({ queue, err: (error as Error).message }, "cannot read the queue's arguments");
      }
    },
  };
}

/** A publish waiting for its confirm; `returned` is set if the broker returned its body meanwhile. */
type Outstanding = { body: Buffer; returned?: string };

/**
 * A confirm channel on the publishing connection, re-opened by the connection manager after a
 * reconnect; at each (re)open it declares the queue if missing and looks at its arguments. A
 * basic.return reaches the client before the confirm of its message, while its publish is
 * outstanding: it marks every outstanding publish of the same body (an equal copy may fail with it).
 */
function openConfirmChannel(
  connection: AmqpConnectionManager,
  queue: string,
  keeper: ReturnType<typeof queueKeeper>,
  outstanding: Set<Outstanding>,
): ChannelWrapper {
  const channel = connection.createChannel({
    confirm: true,
    name: `confirmed to ${queue}`,
    setup: async (raw: ConfirmChannel) => {
      raw.on('return', (message: Message) => {
        const { replyCode, replyText } = message.fields as unknown as {
          replyCode: number;
          replyText: string;
        };
        for (const publish of outstanding)
          if (publish.body.equals(message.content)) publish.returned = `${replyCode} ${replyText}`;
      });
      await keeper.declare();
      void keeper.warnOfSilentLosses();
    },
  });
  channel.on('error', () => undefined);
  return channel;
}

/**
 * Publishes confirmed copies to `queue`: the dead letters, and the bridge's requeue copies to the
 * incoming queue. Every message is published `mandatory`: a publish resolves only once the broker
 * has confirmed it and did not return it (no queue took it); else it rejects (MessageReturnedError,
 * the broker's nack, or ConfirmTimeoutError after `timeoutMs`), and the caller keeps the original.
 */
export function createConfirmedPublisher(
  connection: AmqpConnectionManager,
  queue: string,
  { timeoutMs = 10_000, log }: ConfirmedPublisherOptions = {},
): ConfirmedPublisher & {
  /** Why the last publish failed, until one succeeds: readiness's reason. */
  refusal(): string | undefined;
} {
  const outstanding = new Set<Outstanding>();
  const keeper = queueKeeper(connection, queue, log);
  const channel = openConfirmChannel(connection, queue, keeper, outstanding);
  const timedOut = () => new ConfirmTimeoutError(`no publisher confirm within ${timeoutMs} ms`);
  let refusal: string | undefined;
  const send = async (body: Buffer, options: Options.Publish, deadline: number) => {
    await keeper.declare();
    // Given up on while declaring (a blocked connection): never sent later, after the caller moved on.
    const left = deadline - Date.now();
    if (left <= 0) throw timedOut();
    const publish: Outstanding = { body };
    outstanding.add(publish);
    try {
      // The manager's own timeout, the time left, drops the message from its queue: not sent later.
      await channel.sendToQueue(queue, body, { ...options, mandatory: true, timeout: left });
    } finally {
      outstanding.delete(publish);
    }
    if (publish.returned !== undefined)
      throw new MessageReturnedError(
        `RabbitMQ returned the message (${publish.returned}): no queue ${queue}` +
          (keeper.refused() ? `; ${keeper.refused()}` : ''),
      );
  };
  return {
    async publish(body, options) {
      try {
        await pTimeout(send(body, options, Date.now() + timeoutMs), {
          milliseconds: timeoutMs,
          message: timedOut(),
        });
        refusal = undefined;
      } catch (error) {
        const failure = (error as Error).message === 'timeout' ? timedOut() : (error as Error);
        refusal = `publishing to ${queue}: ${failure.message}`;
        throw failure;
      }
    },
    accepting: () => refusal === undefined,
    refusal: () => refusal,
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
