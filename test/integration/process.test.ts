import type { Client } from '@temporalio/client';
import amqplib from 'amqplib';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.js';
import { spawnApp, waitUntilReady, type AppProcess } from '../support/app-process.js';
import {
  deleteQueues,
  pool,
  publisher,
  RABBITMQ_URL,
  resetDatabase,
  rows,
  temporalClient,
  testConfig,
  waitFor,
} from '../support/harness.js';
import { startTcpProxy } from '../support/tcp-proxy.js';
import { startThrowawayPostgres } from '../support/throwaway-services.js';

/** The real entrypoint as a process: observability, readiness, graceful shutdown, secrets. */
describe('the balance-sync process', () => {
  let db: pg.Pool;
  let config: Config;
  let app: AppProcess;
  let temporal: Client;

  beforeAll(async () => {
    db = pool();
    temporal = await temporalClient();
    await resetDatabase(db);
    config = testConfig();
    app = await spawnApp(config);
    await waitUntilReady(app);
  });

  afterAll(async () => {
    await app.kill('SIGKILL');
    await deleteQueues(config.INCOMING_QUEUE, config.DEAD_LETTER_QUEUE);
    await temporal.connection.close();
    await db.end();
  });

  it('answers /healthz and reports every dependency ready on /readyz', async () => {
    expect(await app.get('/healthz')).toEqual({ status: 200, body: '{"status":"ok"}' });
    const ready = JSON.parse((await app.get('/readyz')).body);
    expect(ready).toEqual({
      ready: true,
      checks: {
        rabbitmq: true,
        rabbitmqUnblocked: true,
        deadLetterQueue: true,
        worker: true,
        temporal: true,
        postgres: true,
        keydb: true,
      },
    });
  });

  it('exports its own and the Temporal runtime metrics on /metrics', async () => {
    const queue = await publisher(config.INCOMING_QUEUE);
    await queue.publish('{"id": 1, "value": 600}', { messageId: 'metrics-good' });
    await queue.publish('{oops', { messageId: 'metrics-bad' });
    await queue.close();
    const metric = (text: string, name: string) =>
      Number(
        text
          .split('\n')
          .find((line) => line.startsWith(name))
          ?.split(' ')
          .pop() ?? NaN,
      );
    const text = await waitFor('the metrics to count both messages', async () => {
      const { body } = await app.get('/metrics');
      return metric(body, 'balance_sync_messages_dead_lettered_total{code="invalid_json"}') === 1 &&
        metric(body, 'balance_sync_ingest_end_to_end_seconds_count') === 1 &&
        /^temporal_workflow_completed\{/m.test(body)
        ? body
        : undefined;
    });
    expect(metric(text, 'balance_sync_messages_consumed_total')).toBe(2);
    expect(metric(text, 'balance_sync_messages_acked_total{outcome="started"}')).toBe(1);
    expect(metric(text, 'balance_sync_workflow_start_seconds_count')).toBe(1);
    // Its first workflow task came back with the start, to this process's worker.
    expect(metric(text, 'balance_sync_workflow_starts_total{dispatch="eager"}')).toBe(1);
    expect(text).toContain('# TYPE balance_sync_sync_write_offset_seconds histogram');
    expect(text).toContain('# TYPE balance_sync_reconcile_drift_providers gauge');
    // From the Temporal Runtime's Prometheus exporter.
    expect(text).toMatch(/^temporal_workflow_completed\{/m);
  });

  /** Rows of provider 2 written by the SIGTERM test (the seed has ids 1 to 3). */
  const written = async () =>
    (
      await rows(
        db,
        `SELECT count(*)::int AS n, count(DISTINCT transaction_value)::int AS distinct_values
         FROM historical_transactions WHERE provider_id = 2 AND id > 3`,
      )
    )[0] as { n: number; distinct_values: number };
  /** Messages ready on the incoming queue and IngestTransaction runs still open: both 0 once drained. */
  const backlog = async () => {
    const connection = await amqplib.connect(RABBITMQ_URL);
    const { messageCount } = await (await connection.createChannel()).checkQueue(config.INCOMING_QUEUE);
    await connection.close();
    const { count } = await temporal.workflow.count(
      `WorkflowType = 'IngestTransaction' AND ExecutionStatus = 'Running' AND TaskQueue = '${config.TEMPORAL_TASK_QUEUE}'`,
    );
    return messageCount + count;
  };
  // Anonymous, as the original producer sends: a start made but not acked would be started again
  // on redelivery under a new workflow ID, so exactly N rows proves the drain.
  const anonymous = (from: number, count: number) =>
    Array.from({ length: count }, (_, i) => [JSON.stringify({ id: 2, value: from + i }), {}] as const);

  it('stops on SIGTERM after finishing what is in flight, exits 0, and never logs a password', async () => {
    const count = 300;
    const queue = await publisher(config.INCOMING_QUEUE);
    await queue.publishMany(anonymous(0, count));
    await queue.close();
    // Signalled as soon as starts are being acked, so some are in flight when it arrives.
    await waitFor('the first acks', async () =>
      /^balance_sync_messages_acked_total\{outcome="started"\} [1-9]/m.test((await app.get('/metrics')).body)
        ? true
        : undefined,
    );
    expect(await app.kill('SIGTERM')).toBe(0);
    const stoppedConsuming = JSON.parse(
      app.lines.find((line) => line.includes('"msg":"stopped consuming"'))!,
    );
    expect(stoppedConsuming.inFlight).toBeGreaterThan(0);
    // Shutdown order: stop consuming, drain in-flight starts (each acked), stop the worker, close connections.
    const order = [
      '"msg":"shutting down"',
      '"msg":"stopped consuming"',
      '"msg":"in-flight messages settled"',
      '"state":"STOPPING"',
      '"msg":"stopped"',
    ].map((marker) => app.lines.findIndex((line) => line.includes(marker)));
    expect(order.every((index, i) => index >= 0 && (i === 0 || index > order[i - 1]!))).toBe(true);
    expect(app.lines.join('\n')).not.toContain('password');

    // Published while no process runs: queued work for the fresh process, on any machine speed.
    const whileDown = 20;
    const late = await publisher(config.INCOMING_QUEUE);
    await late.publishMany(anonymous(count, whileDown));
    await late.close();

    // A fresh process picks up whatever was still queued or started: each message exactly once.
    const total = count + whileDown;
    app = await spawnApp(config);
    await waitUntilReady(app);
    await waitFor(
      'every row, an empty queue and no open run',
      async () => ((await written()).n >= total && (await backlog()) === 0 ? true : undefined),
      90_000,
    );
    expect(await written()).toEqual({ n: total, distinct_values: total });
    // Room for its 90 s wait above: 300 messages through two processes take ~11 s alone, over 60 s
    // when CI's other suites share the two cores.
  }, 150_000);

  it("exits within compose's 30 s stop_grace_period while every insert is stuck, and loses nothing", async () => {
    const before = (await written()).n;
    const stuck = 5;
    // A held lock makes every insert wait (up to statement_timeout): in flight, and going nowhere.
    const locker = await db.connect();
    await locker.query('BEGIN; LOCK TABLE historical_transactions IN ACCESS EXCLUSIVE MODE');
    let signalledAt = 0;
    try {
      const queue = await publisher(config.INCOMING_QUEUE);
      await queue.publishMany(anonymous(10_000, stuck));
      await queue.close();
      await waitFor('the runs to be started', async () => ((await backlog()) === stuck ? true : undefined));
      await waitFor('the inserts to wait on the lock', async () => {
        const waiting = await rows(
          db,
          `SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name = 'balance-sync ingest'`,
        );
        return waiting.length > 0 ? true : undefined;
      });
      signalledAt = Date.now();
      await app.kill('SIGTERM');
    } finally {
      await locker.query('ROLLBACK');
      locker.release();
    }
    expect(Date.now() - signalledAt).toBeLessThan(30_000);
    app = await spawnApp(config);
    await waitUntilReady(app);
    await waitFor(
      'the stuck rows, once each',
      async () => ((await written()).n >= before + stuck && (await backlog()) === 0 ? true : undefined),
      90_000,
    );
    expect((await written()).n).toBe(before + stuck);
  }, 150_000);

  it('fails the inserts stuck on a Postgres that hangs mid-query with its sockets open (query_timeout), then records every message once, without a restart', async () => {
    // A Postgres of its own behind a proxy: the proxy keeps the ingest pool's sockets open and passes
    // nothing on them, for good (a server hung, or a half-open connection after a partition).
    const postgres = await startThrowawayPostgres();
    const proxy = await startTcpProxy(postgres.port);
    const direct = new pg.Pool({ connectionString: postgres.url, max: 2 });
    direct.on('error', () => undefined);
    const proxied = new URL(postgres.url);
    proxied.port = String(proxy.port);
    const hungConfig = testConfig({ DATABASE_URL: proxied.toString() });
    let hung: AppProcess | undefined;
    const recorded = async () =>
      (
        await rows(
          direct,
          `SELECT count(*)::int AS n, count(DISTINCT transaction_value)::int AS distinct_values
           FROM historical_transactions WHERE transaction_value BETWEEN 81 AND 82`,
        )
      )[0] as { n: number; distinct_values: number };
    try {
      await resetDatabase(direct);
      hung = await spawnApp(hungConfig);
      await waitUntilReady(hung);
      const messages = 12;
      // Each insert waits on a lock, so the pool's 10 connections are each in the middle of a query.
      const locker = await direct.connect();
      await locker.query('BEGIN; LOCK TABLE historical_transactions IN ACCESS EXCLUSIVE MODE');
      try {
        const queue = await publisher(hungConfig.INCOMING_QUEUE);
        await queue.publishMany(
          Array.from(
            { length: messages },
            (_, i) =>
              [`{"id": 1, "value": 81.${String(i).padStart(2, '0')}}`, { messageId: `hung-${i}` }] as const,
          ),
        );
        await queue.close();
        await waitFor('every ingest connection in the middle of an insert', async () => {
          const waiting = await rows(
            direct,
            `SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name = 'balance-sync ingest'`,
          );
          return waiting.length === 10 ? true : undefined;
        });
        expect(proxy.freeze((hello) => hello.includes('balance-sync ingest'))).toBe(10);
      } finally {
        await locker.query('ROLLBACK');
        locker.release();
      }
      const frozenAt = Date.now();
      const notReady = await waitFor('/readyz 503', async () => {
        const response = await hung!.get('/readyz');
        return response.status === 503 ? JSON.parse(response.body) : undefined;
      });
      expect(notReady.checks.postgres).toBe(false);
      // Each stuck insert fails at the pool's query_timeout (its statement_timeout + 5 s: 35 s), which
      // hands its connection back; nothing else ends a query whose reply never comes.
      await waitFor(
        'ready again, every message recorded and no run open',
        async () => {
          if ((await hung!.get('/readyz')).status !== 200 || (await recorded()).n < messages)
            return undefined;
          const { count } = await temporal.workflow.count(
            `WorkflowType = 'IngestTransaction' AND ExecutionStatus = 'Running' AND TaskQueue = '${hungConfig.TEMPORAL_TASK_QUEUE}'`,
          );
          return count === 0 ? true : undefined;
        },
        90_000,
      );
      expect(Date.now() - frozenAt).toBeGreaterThan(20_000);
      expect(await recorded()).toEqual({ n: messages, distinct_values: messages });
    } finally {
      await hung?.kill('SIGKILL');
      await deleteQueues(hungConfig.INCOMING_QUEUE, hungConfig.DEAD_LETTER_QUEUE);
      await direct.end();
      await proxy.close();
      await postgres.stop();
    }
  }, 180_000);

  it('reports not ready, but alive, while RabbitMQ is unreachable', async () => {
    const broken = await spawnApp(testConfig({ RABBITMQ_URL: 'amqp://user:password@127.0.0.1:1' }));
    try {
      // Start-up done (it names its checks instead of what it waits for), the bridge still retrying.
      const readyz = await waitFor(
        'the start-up to finish',
        async () => {
          const response = await broken.get('/readyz');
          return JSON.parse(response.body).checks ? response : undefined;
        },
        60_000,
      );
      expect((await broken.get('/healthz')).status).toBe(200);
      expect(readyz.status).toBe(503);
      expect(JSON.parse(readyz.body).checks.rabbitmq).toBe(false);
    } finally {
      await broken.kill('SIGKILL');
    }
  });

  it('refuses bad configuration with one message naming the variable, without echoing secrets', async () => {
    const bad = await spawnApp(testConfig(), {
      HTTP_PORT: 'eighty',
      DATABASE_URL: 'mysql://user:hunter2@db/fxc',
    });
    expect(await bad.exited).toBe(2);
    expect(bad.lines.filter((line) => line.trim() !== '')).toEqual([
      expect.stringMatching(/^Invalid configuration: .*DATABASE_URL: .*HTTP_PORT: /),
    ]);
    expect(bad.lines.join('\n')).not.toContain('hunter2');
  });
});
