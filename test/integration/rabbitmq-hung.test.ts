import type pg from 'pg';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import type { App } from '../../src/app.js';
import type { Config } from '../../src/config.js';
import { REASON_CODE_HEADER } from '../../src/rabbitmq/dead-letters.js';
import {
  appMetric,
  appReadiness,
  drainQueue,
  pool,
  publisher,
  RABBITMQ_URL,
  resetDatabase,
  rows,
  startTestApp,
  stopTestApp,
  testConfig,
  untilIngestSettled,
  waitFor,
  type Publisher,
} from '../support/harness.js';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js';

interface LogLine {
  level: number;
  msg: string;
  connection?: string;
  err?: string;
}

const WARN = 40;

const valuesFrom = (base: number, count: number) =>
  Array.from({ length: count }, (_, i) => `${base}.${String(i + 1).padStart(2, '0')}`);

/** The broker answers through a proxy that can go silent with every socket left open. */
describe('RabbitMQ hung: sockets open, no frames either way', () => {
  let db: pg.Pool;
  let rabbitmq: TcpProxy;
  let temporal: TcpProxy;
  let config: Config;
  let app: App;
  let producer: Publisher;
  const lines: LogLine[] = [];
  /**
   * amqplib checks for incoming data once per heartbeat interval and gives up after two empty checks
   * in a row, so a hang is noticed 2 to 3 intervals after the last frame; 2 s more for timers and
   * the reaction to show on a busy machine.
   */
  const detectionBoundMs = () => (3 * config.RABBITMQ_HEARTBEAT_SECONDS + 2) * 1000;

  const lineFor = (msg: string, name: string, since: number) =>
    lines.slice(since).find((l) => l.msg === msg && l.connection === name);
  const lostLine = (name: string, since: number) => {
    const line = lineFor('disconnected from RabbitMQ', name, since);
    return line && line.level >= WARN ? line : undefined;
  };
  const recorded = async (low: number, high: number) =>
    (
      await rows(
        db,
        'SELECT transaction_value::text AS value FROM historical_transactions WHERE transaction_value > $1 AND transaction_value < $2 ORDER BY 1',
        [low, high],
      )
    ).map((row) => row.value as string);

  beforeAll(async () => {
    db = pool();
    await resetDatabase(db);
    rabbitmq = await startTcpProxy(Number(new URL(RABBITMQ_URL).port || 5672));
    // Temporal too: freezing it holds a delivery unacked when the broker hangs.
    temporal = await startTcpProxy(Number(inject('temporalAddress').split(':').at(-1)));
    const proxied = new URL(RABBITMQ_URL);
    proxied.port = String(rabbitmq.port);
    config = testConfig({
      RABBITMQ_URL: proxied.toString(),
      TEMPORAL_ADDRESS: `127.0.0.1:${temporal.port}`,
      // Not the default 5 s: the test's waits scale with it, and it proves the setting is used.
      RABBITMQ_HEARTBEAT_SECONDS: '3',
    });
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    app = await startTestApp(config, log);
    producer = await publisher(config.INCOMING_QUEUE);
    await waitFor('consuming', async () => ((await appReadiness(app)).status === 200 ? true : undefined));
  });

  afterAll(async () => {
    // Should a test fail mid-hang, the app can still close its connections.
    temporal?.thaw('resume');
    rabbitmq?.thaw('resume');
    await producer?.close();
    await stopTestApp(app, config);
    await rabbitmq?.close();
    await temporal?.close();
    await db.end();
  });

  it(`notices within 3 heartbeats, reconnects past the hung sockets, and records every message once, the one held unacked too`, async () => {
    const consuming = `balance-sync bridge ${config.TEMPORAL_TASK_QUEUE}`;
    const lost = 'balance_sync_consumer_cancellations_total{cause="connection_lost"}';
    const lostBefore = await appMetric(app, lost);
    const since = lines.length;

    // A delivery held unacked: its start waits on a frozen Temporal when the broker hangs.
    temporal.freeze();
    await producer.publish('{"id": 1, "value": 72.5}', { messageId: 'hung-broker-held' });
    await waitFor('the delivery held', async () =>
      (await appMetric(app, 'balance_sync_bridge_deliveries_in_flight')) === 1 ? true : undefined,
    );

    const hungAt = Date.now();
    expect(rabbitmq.freeze()).toBe(2); // consuming and publishing
    const during = valuesFrom(72, 10);
    await producer.publishMany(during.map((value) => [`{"id": 1, "value": ${value}}`, {}] as const));

    await waitFor(
      '/readyz naming rabbitmq',
      async () => ((await appReadiness(app)).checks.rabbitmq === false ? true : undefined),
      detectionBoundMs(),
    );
    const readiness = await appReadiness(app);
    expect(readiness.status).toBe(503);
    await waitFor('both connections lost', () =>
      Promise.resolve(
        lostLine(consuming, since) && lostLine(`${consuming} publishing`, since) ? true : undefined,
      ),
    );
    expect(Date.now() - hungAt).toBeLessThan(detectionBoundMs());
    expect(lostLine(consuming, since)?.err).toBe('Heartbeat timeout');
    expect(lostLine(`${consuming} publishing`, since)?.err).toBe('Heartbeat timeout');
    expect(await appMetric(app, lost)).toBeGreaterThan(lostBefore);
    for (const connection of ['consuming', 'publishing'])
      expect(
        await appMetric(app, `balance_sync_rabbitmq_connections_lost_total{connection="${connection}"}`),
      ).toBe(1);
    // The held delivery was let go when its channel closed, its start already sent (the duplicate
    // window without a message_id); the broker redelivers it.
    await waitFor('the held delivery released', async () =>
      (await appMetric(app, 'balance_sync_bridge_deliveries_in_flight')) === 0 ? true : undefined,
    );
    expect(await appMetric(app, 'balance_sync_deliveries_released_total{reason="closed_after_start"}')).toBe(
      1,
    );

    // Each connection tries again while the broker is still hung: those attempts hear nothing either.
    await waitFor(
      'an attempt by each connection during the hang',
      () => Promise.resolve(rabbitmq.connections().filter((c) => c.frozen).length >= 4 ? true : undefined),
      detectionBoundMs(),
    );
    // New connections get through; the hung ones stay silent for good.
    temporal.thaw('resume');
    rabbitmq.thaw('keep');
    const thawed = lines.length;
    const after = valuesFrom(73, 10);
    await producer.publishMany(after.map((value) => [`{"id": 1, "value": ${value}}`, {}] as const));
    await waitFor(
      'consuming again',
      async () => ((await appReadiness(app)).status === 200 ? true : undefined),
      detectionBoundMs() * 2,
    );
    // The attempts made during the hang were given up after two silent intervals, and said so.
    await waitFor('both connections back', () =>
      Promise.resolve(
        [consuming, `${consuming} publishing`].every((name) => lineFor('connected to RabbitMQ', name, thawed))
          ? true
          : undefined,
      ),
    );
    for (const name of [consuming, `${consuming} publishing`])
      expect(lineFor('cannot reach RabbitMQ; retrying', name, since)?.err).toBe('connect ETIMEDOUT');

    const expected = ['72.5', ...during, ...after].sort();
    await waitFor('every row', async () =>
      (await recorded(72, 74)).length >= expected.length ? true : undefined,
    );
    // Settled: nothing held, nothing running; then still exactly one row per message.
    await untilIngestSettled(app, config.TEMPORAL_TASK_QUEUE);
    expect(await recorded(72, 74)).toEqual(expected);
  }, 90_000);

  it('notices a hung publishing connection alone and dead-letters once it is back', async () => {
    const publishing = `balance-sync bridge ${config.TEMPORAL_TASK_QUEUE} publishing`;
    const since = lines.length;
    await drainQueue(config.DEAD_LETTER_QUEUE);
    const hungAt = Date.now();
    expect(rabbitmq.freeze((hello) => hello.includes(publishing))).toBe(1);
    await producer.publish('not json');

    await waitFor(
      'the publishing connection lost',
      () => Promise.resolve(lostLine(publishing, since)),
      detectionBoundMs(),
    );
    expect(Date.now() - hungAt).toBeLessThan(detectionBoundMs());
    expect(lostLine(publishing, since)?.err).toBe('Heartbeat timeout');
    expect(
      await appMetric(app, 'balance_sync_rabbitmq_connections_lost_total{connection="publishing"}'),
    ).toBe(2);
    // The consuming connection never stopped.
    expect((await appReadiness(app)).checks.rabbitmq).toBe(true);

    const dead = await waitFor(
      'the dead letter',
      async () => {
        const messages = await drainQueue(config.DEAD_LETTER_QUEUE);
        return messages.length > 0 ? messages : undefined;
      },
      45_000,
    );
    expect(dead.map((m) => m.content.toString())).toEqual(['not json']);
    expect(dead[0]!.properties.headers?.[REASON_CODE_HEADER]).toBe('invalid_json');
  }, 90_000);
});
