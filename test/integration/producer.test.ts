import amqplib from 'amqplib';
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parseTransaction } from '../../src/bridge/parse-transaction.js';
import { runProducerCli } from '../../src/producer/cli.js';
import { BAD_KIND_HEADER, BAD_MESSAGES } from '../../src/producer/messages.js';
import { parseProducerOptions, type ProducerOptions } from '../../src/producer/options.js';
import { runProducer } from '../../src/producer/producer.js';
import { ensureProducerTables } from '../../src/producer/schema.js';
import { deleteQueues, drainQueue, RABBITMQ_URL, rows, testConfig, waitFor } from '../support/harness.js';

const MAX_BYTES = 65536;
const AMOUNT = /^-?(0|[1-9]\d*)(\.\d?[1-9])?$/; // at most 2 decimals, no trailing fractional zero

describe('demo producer (npm run produce)', () => {
  // A database of its own, created empty here: the producer's first job is to create the tables.
  const database = `balance_sync_producer_${process.pid}_${randomUUID().slice(0, 8)}`;
  let admin: pg.Pool;
  let db: pg.Pool;
  let databaseUrl: string;
  const queues: string[] = [];

  beforeAll(async () => {
    admin = new pg.Pool({ connectionString: inject('databaseUrl'), max: 1 });
    await admin.query(`CREATE DATABASE ${database}`);
    const url = new URL(inject('databaseUrl'));
    url.pathname = `/${database}`;
    databaseUrl = url.toString();
    db = new pg.Pool({ connectionString: databaseUrl, max: 4 });
    // DROP DATABASE ... WITH (FORCE) in afterAll terminates clients that are still closing.
    for (const p of [admin, db]) p.on('error', () => undefined);
  });

  afterAll(async () => {
    await db?.end();
    await admin?.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
    await admin?.end();
    if (queues.length > 0) await deleteQueues(...queues);
  });

  const newQueue = () => {
    const queue = testConfig().INCOMING_QUEUE;
    queues.push(queue);
    return queue;
  };
  const options = (overrides: Partial<ProducerOptions>): ProducerOptions => ({
    ...parseProducerOptions([], {}),
    rate: 2000,
    ...overrides,
  });
  const produce = (
    queue: string,
    overrides: Partial<ProducerOptions>,
    signal?: AbortSignal,
    log: (line: string) => void = () => undefined,
  ) =>
    runProducer(options(overrides), {
      pool: db,
      rabbitmqUrl: RABBITMQ_URL,
      queue,
      log,
      ...(signal ? { signal } : {}),
    });
  const count = async (table: string) => Number((await rows(db, `SELECT count(*) AS n FROM ${table}`))[0]!.n);
  const providerIds = async () =>
    (await rows(db, 'SELECT id FROM initial_data ORDER BY id')).map((row) => Number(row.id));

  it('creates and seeds the original tables in an empty database, and seeds only once', async () => {
    expect(
      await rows(db, `SELECT to_regclass('initial_data') AS t, to_regclass('historical_transactions') AS h`),
    ).toEqual([{ t: null, h: null }]);

    const first = await produce(newQueue(), { count: 0 });
    expect(first.schema).toEqual({ created: ['initial_data', 'historical_transactions'], seeded: true });
    expect(
      await rows(db, 'SELECT id, provider_name, initial_value::text AS v FROM initial_data ORDER BY id'),
    ).toEqual([
      { id: 1, provider_name: 'Visa', v: '1000' },
      { id: 2, provider_name: 'Mastercard', v: '2000' },
    ]);
    expect(
      await rows(
        db,
        'SELECT provider_id, transaction_value::text AS v FROM historical_transactions ORDER BY id',
      ),
    ).toEqual([
      { provider_id: 1, v: '100' },
      { provider_id: 1, v: '200' },
      { provider_id: 2, v: '-200' },
    ]);

    // A restart: the tables exist, nothing is appended (the original would append the seed again).
    const second = await produce(newQueue(), { count: 0 });
    expect(second.schema).toEqual({ created: [], seeded: false });
    expect([await count('initial_data'), await count('historical_transactions')]).toEqual([2, 3]);

    // --reseed: the original's behaviour, the seed rows appended on every start.
    const third = await produce(newQueue(), { count: 0, reseed: true });
    expect(third.schema).toEqual({ created: [], seeded: true });
    expect([await count('initial_data'), await count('historical_transactions')]).toEqual([4, 6]);
  });

  it('a failed create-and-seed destroys its connection instead of handing it back to the pool', async () => {
    const own = new pg.Pool({ connectionString: databaseUrl, max: 1 });
    own.on('error', () => undefined);
    const fixture =
      'CREATE TABLE IF NOT EXISTS initial_data (id int);\nINSERT INTO no_such_table VALUES (1);';
    await expect(ensureProducerTables(own, { fixture, reseed: true })).rejects.toThrow(/no_such_table/);
    expect({ total: own.totalCount, idle: own.idleCount }).toEqual({ total: 0, idle: 0 });
    await own.end();
  });

  it('publishes N persistent {"id", "value"} messages without message_id, all accepted by the app', async () => {
    const queue = newQueue();
    const summary = await produce(queue, { count: 40 });
    expect(summary).toMatchObject({ published: 40, bad: 0, failed: 0 });
    const ids = await providerIds();
    const messages = await drainQueue(queue);
    expect(messages).toHaveLength(40);
    for (const message of messages) {
      expect(message.properties.deliveryMode).toBe(2);
      expect(message.properties.messageId).toBeUndefined();
      const body = message.content.toString('utf8');
      expect(body).toMatch(/^\{"id": \d+, "value": -?[\d.]+\}$/);
      const parsed = parseTransaction({ body: message.content }, MAX_BYTES);
      if (!parsed.ok) throw new Error(`rejected ${body}: ${parsed.reason}`);
      expect(ids).toContain(parsed.transaction.providerId);
      expect(parsed.transaction.value).toMatch(AMOUNT);
      expect(Math.abs(Number(parsed.transaction.value))).toBeLessThanOrEqual(1000);
    }
    // Random amounts: 40 draws out of 200001 are not all equal.
    expect(new Set(messages.map((m) => m.content.toString())).size).toBeGreaterThan(1);
  });

  it('sets a unique message_id on every message with --message-ids', async () => {
    const queue = newQueue();
    await produce(queue, { count: 40, messageIds: true });
    const messages = await drainQueue(queue);
    expect(messages).toHaveLength(40);
    const messageIds = messages.map((m) => m.properties.messageId as unknown);
    for (const id of messageIds) expect(typeof id).toBe('string');
    expect(new Set(messageIds).size).toBe(40);
  });

  it('bad-message mode: exactly the malformed share, each rejected by the app parser with its code', async () => {
    const queue = newQueue();
    const summary = await produce(queue, { count: 30, badRatio: 0.3 });
    expect(summary).toMatchObject({ published: 30, bad: 9, failed: 0 });
    const messages = await drainQueue(queue);
    expect(messages).toHaveLength(30);
    let bad = 0;
    for (const message of messages) {
      const kind = message.properties.headers?.[BAD_KIND_HEADER] as string | undefined;
      const parsed = parseTransaction({ body: message.content }, MAX_BYTES);
      if (kind === undefined) {
        expect(parsed.ok).toBe(true);
        continue;
      }
      bad++;
      const expected = BAD_MESSAGES.find((m) => m.kind === kind);
      expect(expected, kind).toBeDefined();
      expect(parsed).toMatchObject({ ok: false, code: expected!.code });
    }
    expect(bad).toBe(9);

    // Ratio 1 goes through every kind once.
    const all = newQueue();
    await produce(all, { count: BAD_MESSAGES.length, badRatio: 1 });
    const kinds = (await drainQueue(all)).map((m) => m.properties.headers?.[BAD_KIND_HEADER] as string);
    expect(kinds.sort()).toEqual(BAD_MESSAGES.map((m) => m.kind).sort());
  });

  it('declares the queue as the original does: durable, no arguments', async () => {
    const queue = newQueue();
    await produce(queue, { count: 1 });
    const connection = await amqplib.connect(RABBITMQ_URL);
    try {
      // Same declaration as the original and the bridge: accepted as equivalent.
      const same = await connection.createChannel();
      expect(await same.assertQueue(queue, { durable: true })).toMatchObject({ queue, messageCount: 1 });
      await same.close();
      // Any other declaration is refused by the broker (406 PRECONDITION_FAILED).
      const other = await connection.createChannel();
      other.on('error', () => undefined);
      await expect(other.assertQueue(queue, { durable: false })).rejects.toThrow(/PRECONDITION/);
      const withArguments = await connection.createChannel();
      withArguments.on('error', () => undefined);
      await expect(
        withArguments.assertQueue(queue, { durable: true, arguments: { 'x-max-length': 10 } }),
      ).rejects.toThrow(/PRECONDITION/);
    } finally {
      await connection.close();
    }
  });

  it('keeps the original pace without --rate and stops cleanly when aborted', async () => {
    const queue = newQueue();
    const stop = new AbortController();
    let confirmed = 0;
    const started = performance.now();
    const running = produce(
      queue,
      { rate: undefined, minDelaySeconds: 0.1, maxDelaySeconds: 0.2 },
      stop.signal,
      (line) => void (line.startsWith('sent ') && confirmed++),
    );
    await waitFor('four confirmed messages', () => Promise.resolve(confirmed >= 4 ? true : undefined));
    stop.abort();
    const elapsedMs = performance.now() - started;
    const summary = await running;
    expect(summary.failed).toBe(0);
    expect(summary.published).toBeGreaterThanOrEqual(4);
    // Paced: one message at once, then at least 100 ms between sends, so never more than
    // 1 + elapsed / 100 ms (an unpaced loop would publish hundreds); holds on any machine speed.
    expect(summary.published).toBeLessThanOrEqual(1 + Math.floor(elapsedMs / 99));
    expect(await drainQueue(queue)).toHaveLength(summary.published);
  });

  it('CLI: flags and env, progress on stderr, a JSON summary on stdout', async () => {
    const queue = newQueue();
    const out: string[] = [];
    const err: string[] = [];
    const io = { stdout: (t: string) => void out.push(t), stderr: (t: string) => void err.push(t) };
    const env = {
      DATABASE_URL: databaseUrl,
      RABBITMQ_URL,
      INCOMING_QUEUE: queue,
      PRODUCER_MESSAGE_IDS: 'true',
    };
    const status = await runProducerCli(['--count', '12', '--rate', '500', '--bad-ratio', '0.25'], env, io);
    expect(err.join('')).toContain('12/12 confirmed');
    expect(status).toBe(0);
    expect(JSON.parse(out.join(''))).toMatchObject({ queue, published: 12, bad: 3, failed: 0 });
    const messages = await drainQueue(queue);
    expect(messages).toHaveLength(12);
    expect(messages.every((m) => typeof m.properties.messageId === 'string')).toBe(true);
    // --message-ids prints every id it sent, in rate mode too, so each workflow can be found.
    const printed = [...err.join('').matchAll(/message_id=(\S+)/g)].map((match) => match[1]);
    expect(printed.sort()).toEqual(messages.map((m) => m.properties.messageId as string).sort());

    err.length = 0;
    expect(await runProducerCli(['--bad-ratio', '2'], env, io)).toBe(2);
    expect(err.join('')).toContain('--bad-ratio must be between 0 and 1');
  });
});
