import amqplib from 'amqplib';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import type { App } from '../../src/app.js';
import type { Config } from '../../src/config.js';
import { startDevServer, type DevServer } from '../support/dev-server.js';
import {
  bridgeConnections,
  closeBridgeConnections,
  rabbitmqctl,
  pool,
  publisher,
  resetDatabase,
  rows,
  startTestApp,
  stopTestApp,
  testConfig,
  untilIngestSettled,
  waitFor,
  appMetric,
  appReadiness,
  RABBITMQ_URL,
} from '../support/harness.js';

const VALUES = Array.from({ length: 20 }, (_, i) => `71.${String(i + 1).padStart(2, '0')}`);
const PREFETCH = 20;
const IN_FLIGHT = 'balance_sync_bridge_deliveries_in_flight';
const CONSUMED = 'balance_sync_messages_consumed_total';
const LOST = 'balance_sync_consumer_cancellations_total{cause="connection_lost"}';
const RELEASED = (reason: string) => `balance_sync_deliveries_released_total{reason="${reason}"}`;

/** The broker's view of a queue: messages ready, delivered but unacked, and consumers (rabbitmqctl: slow, for messages). */
async function queueState(queue: string) {
  const fields = ['name', 'messages_ready', 'messages_unacknowledged', 'consumers'];
  const row = (await rabbitmqctl('list_queues', ...fields)).find(([name]) => name === queue);
  if (!row) throw new Error(`no queue ${queue} on the broker`);
  const [ready, unacked, consumers] = row.slice(1).map(Number);
  return { ready, unacked, consumers };
}

/**
 * Messages ready and consumers, each read by a passive declare on one connection: one AMQP round trip,
 * where each rabbitmqctl call starts an Erlang VM (0.75 s of CPU; several seconds under CI's load, and
 * the look-up's 30 s statement_timeout bounds this test's whole wait).
 */
async function queueWatch(queue: string) {
  const connection = await amqplib.connect(RABBITMQ_URL);
  connection.on('error', () => undefined);
  return {
    async readyAndConsumers() {
      const channel = await connection.createChannel();
      channel.on('error', () => undefined); // a 404 closes the channel: the check rejects, no crash
      const { messageCount, consumerCount } = await channel.checkQueue(queue);
      await channel.close().catch(() => undefined);
      return { ready: messageCount, consumers: consumerCount };
    },
    close: () => connection.close().catch(() => undefined),
  };
}

/** The app's provider look-ups waiting on a lock (backend, since when, for how long). */
async function heldLookUps(db: pg.Pool) {
  return (await rows(
    db,
    `SELECT pid, query_start::text AS since, extract(epoch FROM now() - query_start)::float AS age
       FROM pg_stat_activity
      WHERE wait_event_type = 'Lock' AND query LIKE '%FROM initial_data%' AND application_name = 'balance-sync ingest'`,
  )) as { pid: number; since: string; age: number }[];
}

describe('a channel drop', () => {
  let db: pg.Pool;
  let server: DevServer;
  let config: Config;
  let app: App;

  beforeAll(async () => {
    db = pool();
    await resetDatabase(db);
    // Its own dev server: this test freezes it (SIGSTOP).
    server = await startDevServer(inject('temporalCliPath'));
    // No hold for the minute's sync: deliveries must wait on the provider look-up, not at that gate
    // (a hold around a late minute kept them there past the wait below in a loaded CI run).
    config = testConfig({
      TEMPORAL_ADDRESS: server.address,
      BRIDGE_PREFETCH: String(PREFETCH),
      BRIDGE_HOLD_FOR_SYNC: 'false',
    });
    app = await startTestApp(config);
  });

  afterAll(async () => {
    server?.process.kill('SIGCONT');
    await stopTestApp(app, config);
    await server?.stop();
    await db.end();
  });

  it('counts the connections lost while the consumer is paused for a frozen Temporal, and records the 20 anonymous messages published meanwhile exactly once', async () => {
    const paused = 'balance_sync_bridge_consumer_paused';
    const lost = LOST;
    await waitFor('consuming', async () => ((await appReadiness(app)).status === 200 ? true : undefined));
    server.process.kill('SIGSTOP');
    // The bridge sees Temporal stop answering and takes no more deliveries (docs/FAILURE-MATRIX.md: delivery guarantees).
    const frozenAt = Date.now();
    await waitFor('the consumer paused', async () =>
      (await appMetric(app, paused)) === 1 ? true : undefined,
    );
    expect(Date.now() - frozenAt).toBeLessThan(10_000);

    const producer = await publisher(config.INCOMING_QUEUE);
    await producer.publishMany(VALUES.map((value) => [`{"id": 1, "value": ${value}}`, {}] as const));
    await producer.close();
    expect(await closeBridgeConnections(config.TEMPORAL_TASK_QUEUE)).toBe(2); // consuming and publishing
    await waitFor('the lost connection counted', async () =>
      (await appMetric(app, lost)) > 0 ? true : undefined,
    );
    server.process.kill('SIGCONT');

    await waitFor(
      'all 20 rows',
      async () => {
        const found = await rows(
          db,
          'SELECT count(*)::int AS n FROM historical_transactions WHERE transaction_value > 71 AND transaction_value < 72',
        );
        return found[0]?.n === 20 ? true : undefined;
      },
      90_000,
    );
    // Settled: nothing held, nothing running; then still exactly one row per message.
    await waitFor('nothing in flight', async () =>
      (await appMetric(app, 'balance_sync_bridge_deliveries_in_flight')) === 0 &&
      (await appMetric(app, paused)) === 0
        ? true
        : undefined,
    );
    await untilIngestSettled(app, config.TEMPORAL_TASK_QUEUE);
    const recorded = await rows(
      db,
      'SELECT transaction_value::text AS value FROM historical_transactions WHERE transaction_value > 71 AND transaction_value < 72 ORDER BY 1',
    );
    expect(recorded.map((row) => row.value)).toEqual(VALUES);
  }, 180_000);

  it('lets go of 20 anonymous deliveries held on a provider look-up when the connections drop: no start sent for them, no new consumer until they are let go, exactly 20 rows', async () => {
    // A provider the app has not looked up yet: its first message reloads the provider directory,
    // and that read waits on the lock below, past every abortable wait (throttle, Temporal, hold).
    const provider = (
      await rows(
        db,
        `INSERT INTO initial_data (provider_name, initial_value) VALUES ('Held', 0) RETURNING id`,
      )
    )[0]!.id as number;
    const values = Array.from({ length: 20 }, (_, i) => `73.${String(i + 1).padStart(2, '0')}`);
    const taskQueue = config.TEMPORAL_TASK_QUEUE;
    const lostBefore = await appMetric(app, LOST);
    const consumedBefore = await appMetric(app, CONSUMED);
    const releasedBefore = await appMetric(app, RELEASED('channel_closed'));
    const releasedAfterStartBefore = await appMetric(app, RELEASED('closed_after_start'));
    await waitFor('consuming', async () => ((await appReadiness(app)).status === 200 ? true : undefined));

    const locker = await db.connect();
    await locker.query('BEGIN; LOCK TABLE initial_data IN ACCESS EXCLUSIVE MODE');
    try {
      const producer = await publisher(config.INCOMING_QUEUE);
      await producer.publishMany(
        values.map((value) => [`{"id": ${provider}, "value": ${value}}`, {}] as const),
      );
      await producer.close();
      const lookUp = await waitFor(
        '20 deliveries held on the provider look-up',
        async () => {
          const waiting = await heldLookUps(db);
          return waiting.length === 1 && (await appMetric(app, IN_FLIGHT)) === PREFETCH
            ? waiting[0]
            : undefined;
        },
        90_000,
      );
      // Each phase's time since the look-up began, for a failure: all of it must fit in its 30 s.
      const lookUpFrom = Date.now() - Math.round(lookUp.age * 1000);
      const phases: string[] = [`look-up seen +${Math.round(lookUp.age * 1000)} ms`];
      const phase = (name: string) => phases.push(`${name} +${Date.now() - lookUpFrom} ms`);
      const broker = await queueWatch(config.INCOMING_QUEUE);
      try {
        const connections = await bridgeConnections(taskQueue);
        const dropped = connections.filter((c) => c.consuming).map((c) => c.pid);
        expect(connections).toHaveLength(2); // consuming and publishing
        await Promise.all(
          connections.map(({ pid }) => rabbitmqctl('close_connection', pid, 'test: forced close')),
        );
        phase('closed');
        await waitFor('the lost connection counted', async () =>
          (await appMetric(app, LOST)) > lostBefore ? true : undefined,
        );
        // Reconnected, its channel set up: the moment a consumer that did not wait would consume again.
        await waitFor('the consuming connection back, with its prefetch set', async () => {
          const [now, channels] = await Promise.all([
            bridgeConnections(taskQueue),
            rabbitmqctl('list_channels', 'connection', 'prefetch_count'),
          ]);
          const back = now.find((c) => c.consuming && !dropped.includes(c.pid));
          return back && channels.some(([pid, prefetch]) => pid === back.pid && Number(prefetch) === PREFETCH)
            ? true
            : undefined;
        });
        phase('reconnected');
        // The 20 still held are let go only when the look-up returns; a new consumer's prefetch is its
        // own, so consuming now would hold 40. The broker keeps the 20 ready, with no consumer (the
        // only 20 messages on this queue, so none unacked either), and still does 500 ms later: a
        // consume sent just after the reconnect has had its round trips by then.
        // The broker requeues the dropped channel's 20 when it has closed it, which under load comes
        // after the reconnect: wait for that. A new consumer holding them would keep this false.
        const settled = JSON.stringify({ ready: 20, consumers: 0 });
        let settledSince: number | undefined;
        await waitFor('the broker to hold the 20 ready, with no consumer, for 500 ms', async () => {
          if (JSON.stringify(await broker.readyAndConsumers()) !== settled) {
            settledSince = undefined;
            return undefined;
          }
          settledSince ??= Date.now();
          return Date.now() - settledSince >= 500 ? true : undefined;
        });
        phase('settled');
      } catch (error) {
        // The look-up is bounded too (the ingest pool's 30 s statement_timeout): say how long each
        // phase took, which look-up waits now, what the app holds and what the broker has.
        phase('gave up');
        throw new Error(
          `${String(error)}; ${phases.join(', ')}; look-up then ${JSON.stringify(lookUp)}, now ${JSON.stringify(await heldLookUps(db))}; ${await appMetric(app, IN_FLIGHT)} in flight; ${(await appMetric(app, RELEASED('channel_closed'))) - releasedBefore} let go; broker ${JSON.stringify(await queueState(config.INCOMING_QUEUE))}`,
        );
      } finally {
        await broker.close();
      }
      // Still the first look-up, within its statement timeout: the broker's state above is not that of
      // deliveries let go by the timeout and consumed again.
      expect((await heldLookUps(db)).map((waiting) => ({ ...waiting, age: 0 }))).toEqual([
        { ...lookUp, age: 0 },
      ]);
      expect(await appMetric(app, IN_FLIGHT)).toBe(PREFETCH);
      expect(await appMetric(app, CONSUMED)).toBe(consumedBefore + 20);
    } finally {
      await locker.query('ROLLBACK');
      locker.release();
    }

    const recorded = async () =>
      (
        await rows(
          db,
          'SELECT transaction_value::text AS value FROM historical_transactions WHERE provider_id = $1 ORDER BY 1',
          [provider],
        )
      ).map((row) => row.value);
    await waitFor('20 rows', async () => ((await recorded()).length >= 20 ? true : undefined), 60_000);
    await untilIngestSettled(app, taskQueue);
    // Each held delivery let go before its start (the look-up returned after its channel closed),
    // then each redelivery started once: one row per message.
    expect(await recorded()).toEqual(values);
    expect((await appMetric(app, RELEASED('channel_closed'))) - releasedBefore).toBe(20);
    expect((await appMetric(app, RELEASED('closed_after_start'))) - releasedAfterStartBefore).toBe(0);
  }, 180_000);
});
