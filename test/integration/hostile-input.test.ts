import amqplib, { type GetMessage } from 'amqplib';
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../../src/app.js';
import type { Config } from '../../src/config.js';
import { REASON_CODE_HEADER, REASON_HEADER } from '../../src/bridge/dead-letter.js';
import { HOSTILE_CASES, VALID_CASES, type CaseProperties } from '../support/hostile-corpus.js';
import {
  RABBITMQ_URL,
  drainQueue,
  pool,
  publisher,
  resetDatabase,
  rows,
  startTestApp,
  stopTestApp,
  testConfig,
  waitFor,
  type Publisher,
} from '../support/harness.js';

/** Each message carries its case key in this header; the bridge copies headers into dead letters. */
const CASE_HEADER = 'x-hostile-case';

interface Outgoing {
  key: string;
  body: Buffer;
  properties: CaseProperties & { messageId: string };
}
interface Bad extends Outgoing {
  name: string;
  code: string;
}
interface Good extends Outgoing {
  providerId: number;
  /** transaction_value::text expected in Postgres. */
  stored: string;
}

const run = randomUUID().slice(0, 8);
/** Unique per run (workflow IDs are namespace-wide) while keeping the corpus's length, which matters. */
const uniqueId = (id: string | undefined, fallback: string) =>
  id === undefined ? `hostile-${run}-${fallback}` : `${run}-${id}`.slice(0, id.length);
const toBuffer = (body: string | Buffer) => (typeof body === 'string' ? Buffer.from(body, 'utf8') : body);

const bad: Bad[] = HOSTILE_CASES.map((c, i) => ({
  key: `bad-${i}`,
  name: c.name,
  code: c.code,
  body: toBuffer(c.body),
  properties: { ...c.properties, messageId: uniqueId(c.properties?.messageId, `bad-${i}`) },
}));
const valid: Good[] = VALID_CASES.map((c, i) => ({
  key: `valid-${i}`,
  body: toBuffer(c.body),
  properties: { ...c.properties, messageId: uniqueId(c.properties?.messageId, `valid-${i}`) },
  providerId: c.providerId,
  stored: c.storedAs ?? c.value,
}));
/** A plain valid message after every bad one, so bad and good traffic are interleaved. */
const fillers: Good[] = bad.map((_, i) => ({
  key: `filler-${i}`,
  body: Buffer.from(`{"id": ${1 + (i % 2)}, "value": ${i}.25}`),
  properties: { messageId: `hostile-${run}-filler-${i}` },
  providerId: 1 + (i % 2),
  stored: `${i}.25`,
}));
const sentinel: Good = {
  key: 'sentinel',
  body: Buffer.from('{"id": 2, "value": 31415.9265}'),
  properties: { messageId: `hostile-${run}-sentinel` },
  providerId: 2,
  stored: '31415.9265',
};

interface WrittenRow {
  provider_id: number;
  value: string;
  ingest_key: string | null;
}

describe('hostile input through the running app', () => {
  let db: pg.Pool;
  let config: Config;
  let app: App;
  let queue: Publisher;
  let seedMaxId = 0;
  const deadLetters: GetMessage[] = [];
  let written: WrittenRow[] = [];
  let readyAfterCorpus: { rabbitmq?: boolean } = {};
  let leftOnIncoming = -1;

  const send = (message: Outgoing) =>
    queue.publish(message.body, { ...message.properties, headers: { [CASE_HEADER]: message.key } });
  const writtenRows = async () =>
    (await rows(
      db,
      `SELECT h.provider_id, h.transaction_value::text AS value, l.ingest_key
         FROM historical_transactions h LEFT JOIN balance_sync_ingest_ledger l ON l.transaction_id = h.id
        WHERE h.id > $1 ORDER BY h.id`,
      [seedMaxId],
    )) as unknown as WrittenRow[];
  const collectDeadLetters = async () => {
    deadLetters.push(...(await drainQueue(config.DEAD_LETTER_QUEUE)));
  };

  beforeAll(async () => {
    db = pool();
    await resetDatabase(db);
    seedMaxId = Number((await rows(db, 'SELECT max(id) AS id FROM historical_transactions'))[0]!.id);
    config = testConfig();
    app = await startTestApp(config);
    queue = await publisher(config.INCOMING_QUEUE);

    // The whole corpus, each bad message followed by a good one, valid edge cases mixed in.
    for (let i = 0; i < Math.max(bad.length, valid.length); i++) {
      if (bad[i]) await send(bad[i]!);
      if (fillers[i]) await send(fillers[i]!);
      if (valid[i]) await send(valid[i]!);
    }
    const goodBeforeSentinel = valid.length + fillers.length;
    await waitFor(
      'a row for every valid message',
      async () => ((await writtenRows()).length >= goodBeforeSentinel ? true : undefined),
      90_000,
    );
    await waitFor(
      'a dead letter for every bad message',
      async () => {
        await collectDeadLetters();
        return deadLetters.length >= bad.length ? true : undefined;
      },
      90_000,
    );

    // The corpus is processed; the app must still be consuming.
    await send(sentinel);
    await waitFor('the sentinel row', async () =>
      (await writtenRows()).some((row) => row.ingest_key === `ingest-${sentinel.properties.messageId}`)
        ? true
        : undefined,
    );
    const readiness = await fetch(`http://127.0.0.1:${app.httpPort}/readyz`);
    readyAfterCorpus = ((await readiness.json()) as { checks: { rabbitmq?: boolean } }).checks;

    // Stopping waits for every in-flight message, so a late duplicate dead letter or row would be
    // visible below; unacked messages would return to the incoming queue.
    await app.stop();
    await collectDeadLetters();
    written = await writtenRows();
    const connection = await amqplib.connect(RABBITMQ_URL);
    const channel = await connection.createChannel();
    leftOnIncoming = (await channel.checkQueue(config.INCOMING_QUEUE)).messageCount;
    await connection.close();
  }, 240_000);

  afterAll(async () => {
    await queue?.close();
    await stopTestApp(app, config);
    await db?.end();
  });

  it(`dead-letters each of the ${bad.length} bad messages exactly once, with its code and original body`, () => {
    const byKey = new Map<string, GetMessage[]>();
    for (const message of deadLetters) {
      const key = String(message.properties.headers?.[CASE_HEADER]);
      byKey.set(key, [...(byKey.get(key) ?? []), message]);
    }
    const problems: string[] = [];
    for (const message of bad) {
      const copies = byKey.get(message.key) ?? [];
      if (copies.length !== 1) {
        problems.push(`${message.name}: dead-lettered ${copies.length} times`);
        continue;
      }
      const [dead] = copies as [GetMessage];
      const headers = dead.properties.headers ?? {};
      if (headers[REASON_CODE_HEADER] !== message.code)
        problems.push(
          `${message.name}: code ${String(headers[REASON_CODE_HEADER])}, expected ${message.code}`,
        );
      const reason: unknown = headers[REASON_HEADER];
      if (typeof reason !== 'string' || !reason.trim()) problems.push(`${message.name}: no reason`);
      if (!dead.content.equals(message.body))
        problems.push(
          `${message.name}: body changed (${dead.content.length} of ${message.body.length} bytes)`,
        );
      if (dead.properties.messageId !== message.properties.messageId)
        problems.push(`${message.name}: message_id changed`);
      if (dead.properties.contentType !== message.properties.contentType)
        problems.push(`${message.name}: content-type changed`);
      if (dead.properties.contentEncoding !== message.properties.contentEncoding)
        problems.push(`${message.name}: content-encoding changed`);
    }
    const unexpected = [...byKey.keys()].filter((key) => !key.startsWith('bad-'));
    expect(problems).toEqual([]);
    expect(unexpected, 'valid messages that were dead-lettered').toEqual([]);
    expect(deadLetters).toHaveLength(bad.length);
  });

  it('writes no row for any bad message and exactly one row, with the exact value, per valid one', () => {
    const expected = [...valid, ...fillers, sentinel]
      .map((message) => ({
        provider_id: message.providerId,
        value: message.stored,
        ingest_key: `ingest-${message.properties.messageId}`,
      }))
      .sort((a, b) => a.ingest_key.localeCompare(b.ingest_key));
    const actual = [...written].sort((a, b) => String(a.ingest_key).localeCompare(String(b.ingest_key)));
    const badKeys = new Set(bad.map((message) => `ingest-${message.properties.messageId}`));
    expect(written.filter((row) => row.ingest_key === null || badKeys.has(row.ingest_key))).toEqual([]);
    expect(actual).toEqual(expected);
  });

  it('keeps consuming: a message published after the whole corpus is processed', () => {
    expect(written.some((row) => row.ingest_key === `ingest-${sentinel.properties.messageId}`)).toBe(true);
    expect(readyAfterCorpus.rabbitmq).toBe(true);
  });

  it('leaves nothing unacked or unread on the incoming queue', () => {
    expect(leftOnIncoming).toBe(0);
  });
});
