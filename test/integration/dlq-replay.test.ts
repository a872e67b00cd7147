import amqplib, { type Channel, type ConfirmChannel, type ConsumeMessage } from 'amqplib';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { publishDeadLetter, REASON_CODE_HEADER, REASON_HEADER } from '../../src/bridge/dead-letter.js';
import type { DeadLetterCode } from '../../src/bridge/parse-transaction.js';
import type { DeadLetterPublisher } from '../../src/rabbitmq/dead-letters.js';
import { REPLAY_COUNT_HEADER, replayDeadLetters, runDlqReplayCli } from '../../src/ops/dlq-replay.js';
import { deleteQueues, drainQueue, RABBITMQ_URL, testConfig, waitFor } from '../support/harness.js';

/** Dead letters as the bridge writes them: original body and properties, reason headers added. */
const ORIGINALS: {
  body: Buffer;
  messageId?: string;
  code: DeadLetterCode;
  headers?: Record<string, unknown>;
}[] = [
  { body: Buffer.from('not json'), messageId: 'dl-1', code: 'invalid_json' },
  { body: Buffer.from('{"id": 999, "value": 5}'), messageId: 'dl-2', code: 'unknown_provider' },
  { body: Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), messageId: 'dl-3', code: 'not_utf8' },
  { body: Buffer.alloc(0), code: 'invalid_json', headers: { 'x-custom': 'kept' } },
  { body: Buffer.from('{"id": 1, "value": "600"}'), messageId: 'dl-5', code: 'invalid_value' },
];

/** The bridge's publisher interface over a plain confirm channel. */
const publisherOn = (channel: ConfirmChannel, queue: string): DeadLetterPublisher => ({
  publish: (body, options) =>
    new Promise<void>((resolve, reject) =>
      channel.sendToQueue(queue, body, options, (error: unknown) =>
        error ? reject(new Error('refused')) : resolve(),
      ),
    ),
  accepting: () => true,
  close: () => Promise.resolve(),
});

describe('dlq:replay', () => {
  let connection: amqplib.ChannelModel;
  let channel: ConfirmChannel;
  let dead: string;
  let incoming: string;
  let scratch: string;

  beforeAll(async () => {
    connection = await amqplib.connect(RABBITMQ_URL);
    channel = await connection.createConfirmChannel();
  });

  afterAll(async () => {
    await connection.close();
  });

  beforeEach(async () => {
    const config = testConfig();
    dead = config.DEAD_LETTER_QUEUE;
    incoming = config.INCOMING_QUEUE;
    scratch = `${incoming}.scratch`;
    for (const queue of [dead, incoming, scratch]) await channel.assertQueue(queue, { durable: true });
    await deadLetter(ORIGINALS);
  });

  afterEach(async () => {
    await deleteQueues(dead, incoming, scratch);
  });

  /** Puts messages through the bridge's own dead-letter publisher, in order. */
  async function deadLetter(originals: typeof ORIGINALS) {
    for (const original of originals) {
      channel.sendToQueue(scratch, original.body, {
        persistent: true,
        contentType: 'application/json',
        ...(original.messageId ? { messageId: original.messageId } : {}),
        ...(original.headers ? { headers: original.headers } : {}),
      });
      await channel.waitForConfirms();
      const got = await channel.get(scratch, { noAck: false });
      if (!got) throw new Error('scratch message not found');
      const message = got as unknown as ConsumeMessage; // same fields the dead-letter path reads
      await publishDeadLetter(
        publisherOn(channel, dead),
        message,
        original.code,
        `reason for ${original.code}`,
      );
      channel.ack(message);
    }
  }

  const depth = async (queue: string) => (await channel.checkQueue(queue)).messageCount;

  it('--dry-run lists what would move, reports the count and moves nothing', async () => {
    const lines: string[] = [];
    const result = await replayDeadLetters({
      rabbitmqUrl: RABBITMQ_URL,
      from: dead,
      to: incoming,
      dryRun: true,
      log: (line) => lines.push(line),
    });
    expect(result).toMatchObject({ dryRun: true, waiting: 5, moved: 0 });
    expect(result.messages.map((m) => m.reasonCode)).toEqual(ORIGINALS.map((o) => o.code));
    expect(result.messages.map((m) => m.messageId)).toEqual(['dl-1', 'dl-2', 'dl-3', undefined, 'dl-5']);
    expect(lines.filter((l) => l.includes(' would move: '))).toHaveLength(5);
    expect(lines.at(-1)).toContain('5 of 5 dead letter(s)');
    expect(lines.at(-1)).toContain('nothing was moved');

    const limited = await replayDeadLetters({
      rabbitmqUrl: RABBITMQ_URL,
      from: dead,
      to: incoming,
      dryRun: true,
      count: 2,
    });
    expect(limited.messages).toHaveLength(2);

    // Everything is still there, in the same order, with its reason headers.
    expect(await depth(incoming)).toBe(0);
    const left = await drainQueue(dead);
    expect(left.map((m) => m.content)).toEqual(ORIGINALS.map((o) => o.body));
    expect(left.map((m) => m.properties.headers?.[REASON_CODE_HEADER])).toEqual(ORIGINALS.map((o) => o.code));
  });

  it('--count N moves exactly N, oldest first: bodies untouched, reason headers stripped', async () => {
    const result = await replayDeadLetters({
      rabbitmqUrl: RABBITMQ_URL,
      from: dead,
      to: incoming,
      dryRun: false,
      count: 4,
    });
    expect(result).toMatchObject({ dryRun: false, waiting: 5, moved: 4 });

    const moved = await drainQueue(incoming);
    expect(moved).toHaveLength(4);
    moved.forEach((message, i) => {
      const original = ORIGINALS[i]!;
      expect(message.content.equals(original.body)).toBe(true);
      expect(message.properties.messageId).toBe(original.messageId);
      expect(message.properties.contentType).toBe('application/json');
      expect(message.properties.deliveryMode).toBe(2);
      const headers = message.properties.headers ?? {};
      expect(headers[REASON_HEADER]).toBeUndefined();
      expect(headers[REASON_CODE_HEADER]).toBeUndefined();
      expect(Object.keys(headers).filter((k) => k.startsWith('x-balance-sync-'))).toEqual([
        REPLAY_COUNT_HEADER,
      ]);
      expect(Object.keys(headers).filter((k) => k.startsWith('x-original-'))).toEqual([]);
      expect(headers[REPLAY_COUNT_HEADER]).toBe(1);
      expect(headers['x-custom']).toBe(original.headers?.['x-custom']);
    });
    const left = await drainQueue(dead);
    expect(left.map((m) => m.properties.messageId)).toEqual(['dl-5']);
  });

  it('counts replays across dead-letter → replay cycles', async () => {
    await replayDeadLetters({ rabbitmqUrl: RABBITMQ_URL, from: dead, to: incoming, dryRun: false });
    expect(await depth(dead)).toBe(0);
    // The app rejects them again: back on the dead-letter queue, then replayed a second time.
    const again = await drainQueue(incoming);
    expect(again).toHaveLength(5);
    for (const message of again) {
      await publishDeadLetter(
        publisherOn(channel, dead),
        message as unknown as ConsumeMessage,
        'invalid_json',
        'again',
      );
    }
    await replayDeadLetters({ rabbitmqUrl: RABBITMQ_URL, from: dead, to: incoming, dryRun: false });
    const twice = await drainQueue(incoming);
    expect(twice.map((m) => m.properties.headers?.[REPLAY_COUNT_HEADER])).toEqual([2, 2, 2, 2, 2]);
    expect(twice.map((m) => m.content)).toEqual(ORIGINALS.map((o) => o.body));
  });

  it('moves at most what was waiting at the start, even if replayed messages fail again at once', async () => {
    // Stands in for an app that still rejects everything: dead-letters each message it receives.
    const consumer: Channel = await connection.createConfirmChannel();
    await consumer.consume(incoming, (message) => {
      if (!message) return;
      publishDeadLetter(
        publisherOn(consumer as ConfirmChannel, dead),
        message,
        'invalid_json',
        'still bad',
      ).then(
        () => consumer.ack(message),
        () => undefined,
      );
    });
    const result = await replayDeadLetters({
      rabbitmqUrl: RABBITMQ_URL,
      from: dead,
      to: incoming,
      dryRun: false,
    });
    expect(result.moved).toBe(5);
    // All five came back; none was replayed twice.
    await waitFor('the five back on the dead-letter queue', async () =>
      (await depth(dead)) === 5 && (await depth(incoming)) === 0 ? true : undefined,
    );
    await consumer.close();
    const back = await drainQueue(dead);
    expect(back.map((m) => m.properties.headers?.[REPLAY_COUNT_HEADER])).toEqual([1, 1, 1, 1, 1]);
  });

  it('CLI: --dry-run and --count from the command line, queues from the environment', async () => {
    const out: string[] = [];
    const err: string[] = [];
    const io = { stdout: (t: string) => void out.push(t), stderr: (t: string) => void err.push(t) };
    const env = { RABBITMQ_URL, DEAD_LETTER_QUEUE: dead, INCOMING_QUEUE: incoming };

    expect(await runDlqReplayCli(['--dry-run', '--count', '3'], env, io)).toBe(0);
    const text = out.join('');
    expect(text.match(/ would move: /g)).toHaveLength(3);
    expect(text).toContain(`dry run: 3 of 5 dead letter(s) on ${dead} would move to ${incoming}`);
    expect(text).toContain('code=invalid_json');
    expect(await depth(dead)).toBe(5);

    out.length = 0;
    expect(await runDlqReplayCli(['--count', '2'], env, io)).toBe(0);
    expect(out.join('')).toContain(`moved 2 dead letter(s) from ${dead} to ${incoming}`);
    expect([await depth(dead), await depth(incoming)]).toEqual([3, 2]);

    expect(await runDlqReplayCli(['--count', 'many'], env, io)).toBe(2);
    expect(await runDlqReplayCli([], { ...env, DEAD_LETTER_QUEUE: `${dead}.missing` }, io)).toBe(1);
    expect(err.join('')).toContain('not found');
  });
});
