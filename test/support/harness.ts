import { Client, Connection } from '@temporalio/client';
import { Runtime, DefaultLogger } from '@temporalio/worker';
import amqplib, { type Options } from 'amqplib';
import { Redis } from 'ioredis';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import pg from 'pg';
import pino from 'pino';
import { inject } from 'vitest';
import type { PublishBalancesResult } from '../../src/activities/index.js';
import { startApp, type App } from '../../src/app.js';
import { loadConfig, type Config } from '../../src/config.js';

export const RABBITMQ_URL = process.env.TEST_RABBITMQ_URL ?? 'amqp://user:password@127.0.0.1:5672';
export const KEYDB_URL = process.env.TEST_KEYDB_URL ?? 'redis://127.0.0.1:6379/9';
export const PRODUCER_FIXTURE = readFileSync(
  new URL('../../fixtures/producer-schema.sql', import.meta.url),
  'utf8',
);

let runtimeInstalled = false;
/** Keeps the SDK quiet in tests; set TEST_LOG_LEVEL=info to see it. */
export function installQuietRuntime() {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  Runtime.install({
    logger: new DefaultLogger((process.env.TEST_LOG_LEVEL?.toUpperCase() as 'WARN') ?? 'WARN'),
    shutdownSignals: [],
  });
}

export const silentLog = () => pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

/** A config with names unique to this test, so tests never see each other's queues or schedules. */
export function testConfig(overrides: Record<string, string> = {}): Config {
  const id = randomUUID().slice(0, 8);
  return loadConfig({
    TEMPORAL_ADDRESS: inject('temporalAddress'),
    TEMPORAL_NAMESPACE: inject('temporalNamespace'),
    TEMPORAL_TASK_QUEUE: `test-${id}`,
    DATABASE_URL: inject('databaseUrl'),
    KEYDB_URL,
    RABBITMQ_URL,
    INCOMING_QUEUE: `test-${id}.incoming_transactions`,
    DEAD_LETTER_QUEUE: `test-${id}.incoming_transactions.dead`,
    SYNC_SCHEDULE_ID: `sync-balances-${id}`,
    RECONCILE_SCHEDULE_ID: `reconcile-balances-${id}`,
    HTTP_PORT: '0',
    TEMPORAL_METRICS_PORT: '0',
    STARTUP_WAIT_SECONDS: '30',
    WORKFLOW_BUNDLE_PATH: inject('workflowBundlePath'),
    LOG_LEVEL: 'silent',
    ...overrides,
  });
}

export function pool(): pg.Pool {
  const db = new pg.Pool({ connectionString: inject('databaseUrl'), max: 4 });
  // An idle client killed by a Postgres restart (the fault suite) is dropped; the next query reconnects.
  db.on('error', () => undefined);
  return db;
}

/** Drops everything and loads the original producer's schema and seed. */
export async function resetDatabase(db: pg.Pool): Promise<void> {
  await db.query(`
    DROP TABLE IF EXISTS historical_transactions, initial_data, balance_sync_ingest_ledger,
      balance_sync_provider_sums, balance_sync_published_keys, balance_sync_sync_state,
      balance_sync_terminated_runs, balance_sync_watched_runs, balance_sync_publications, balance_sync_balance_changes,
      balance_sync_balance_current, balance_sync_balance_checkpoints, balance_sync_unconfirmed_writes CASCADE;
    ${PRODUCER_FIXTURE}`);
}

export async function resetKeydb(): Promise<Redis> {
  const keydb = new Redis(KEYDB_URL);
  await keydb.flushdb();
  return keydb;
}

export async function temporalClient(): Promise<Client> {
  const connection = await Connection.connect({ address: inject('temporalAddress') });
  return new Client({ connection, namespace: inject('temporalNamespace') });
}

/** Polls `probe` until it returns a value other than undefined, or fails with `what` after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** IngestTransaction runs started on `config`'s task queue between two instants, as visibility counts them. */
export async function ingestStartsBetween(app: App, config: Config, fromMs: number, toMs: number) {
  const query =
    `WorkflowType = 'IngestTransaction' AND TaskQueue = '${config.TEMPORAL_TASK_QUEUE}' AND ` +
    `StartTime >= '${new Date(fromMs).toISOString()}' AND StartTime <= '${new Date(toMs).toISOString()}'`;
  return (await app.client.workflow.count(query)).count;
}

/**
 * The minute boundary (epoch ms) of the sync schedule's first tick that fires after `afterMs`,
 * asking the schedule rather than the clock (each tick comes SYNC_LEAD_SECONDS early), so a
 * schedule created inside the lead window waits for the minute after.
 */
export async function nextScheduledBoundary(app: App, config: Config, afterMs: number): Promise<number> {
  const leadMs = config.SYNC_LEAD_SECONDS * 1000;
  const { info } = await app.client.schedule.getHandle(config.SYNC_SCHEDULE_ID).describe();
  const tick = info.nextActionTimes.find((at) => at.getTime() + leadMs > afterMs + 500);
  if (tick === undefined) throw new Error(`${config.SYNC_SCHEDULE_ID} has no tick after ${afterMs}`);
  return tick.getTime() + leadMs;
}

/** The result of the sync schedule's run for this minute boundary (found among its recent actions). */
export async function scheduledRunResult(
  app: App,
  config: Config,
  boundary: number,
): Promise<PublishBalancesResult> {
  const leadMs = config.SYNC_LEAD_SECONDS * 1000;
  const description = await app.client.schedule.getHandle(config.SYNC_SCHEDULE_ID).describe();
  const action = description.info.recentActions.find((a) => a.scheduledAt.getTime() === boundary - leadMs);
  if (!action)
    throw new Error(`${config.SYNC_SCHEDULE_ID} has no run for ${new Date(boundary).toISOString()}`);
  return (await app.client.workflow
    .getHandle(action.action.workflow.workflowId)
    .result()) as PublishBalancesResult;
}

/**
 * Polls KeyDB every `everyMs` (as a client would) until `key` is no longer `from`, or `untilMs`; the
 * epoch ms it was seen changed, or 0. A few ms between reads keeps the resolution far under the 1 s
 * the sync tests assert while leaving the CPU to the app under test.
 */
export async function keyChangedAt(
  keydb: Redis,
  key: string,
  from: string,
  untilMs: number,
  everyMs = 5,
): Promise<number> {
  while (Date.now() < untilMs) {
    if ((await keydb.get(key)) !== from) return Date.now();
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
  return 0;
}

export interface Publisher {
  publish(body: string | Buffer, properties?: Options.Publish): Promise<void>;
  /** Publishes all, then waits for the broker to confirm them all. */
  publishMany(messages: readonly (readonly [string | Buffer, Options.Publish])[]): Promise<void>;
  close(): Promise<void>;
}

/** A confirm-channel publisher; declares the queue as the producer does. */
export async function publisher(queue: string): Promise<Publisher> {
  const connection = await amqplib.connect(RABBITMQ_URL);
  const channel = await connection.createConfirmChannel();
  await channel.assertQueue(queue, { durable: true });
  return {
    async publish(body, properties = {}) {
      channel.sendToQueue(queue, typeof body === 'string' ? Buffer.from(body) : body, {
        persistent: true,
        ...properties,
      });
      await channel.waitForConfirms();
    },
    async publishMany(messages) {
      for (const [body, properties] of messages) {
        channel.sendToQueue(queue, typeof body === 'string' ? Buffer.from(body) : body, {
          persistent: true,
          ...properties,
        });
      }
      await channel.waitForConfirms();
    },
    async close() {
      await connection.close();
    },
  };
}

/** Reads (and acks) every message currently on a queue (of the shared broker unless `url` says). */
export async function drainQueue(queue: string, url = RABBITMQ_URL) {
  const connection = await amqplib.connect(url);
  const channel = await connection.createChannel();
  await channel.assertQueue(queue, { durable: true });
  const messages = [];
  for (;;) {
    const message = await channel.get(queue, { noAck: true });
    if (!message) break;
    messages.push(message);
  }
  await connection.close();
  return messages;
}

export async function deleteQueues(...queues: string[]) {
  const connection = await amqplib.connect(RABBITMQ_URL);
  const channel = await connection.createChannel();
  for (const queue of queues) await channel.deleteQueue(queue);
  await connection.close();
}

/** Stops an in-process app and removes what it created on the shared broker and dev server. */
export async function stopTestApp(app: App | undefined, config: Config | undefined): Promise<void> {
  await app?.stop();
  if (!app || !config) return;
  for (const id of [config.SYNC_SCHEDULE_ID, config.RECONCILE_SCHEDULE_ID]) {
    await app.client.schedule
      .getHandle(id)
      .delete()
      .catch(() => undefined);
  }
  await deleteQueues(config.INCOMING_QUEUE, config.DEAD_LETTER_QUEUE);
}

export async function startTestApp(config: Config, log = silentLog()): Promise<App> {
  installQuietRuntime();
  return await startApp(config, log);
}

/** One sample of an in-process app's /metrics, e.g. `balance_sync_consumer_cancellations_total{cause="cancel"}`; undefined when absent. */
export async function appSample(app: App, sample: string): Promise<number | undefined> {
  const text = await (await fetch(`http://127.0.0.1:${app.httpPort}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${sample} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}

/** One sample of an in-process app's /metrics (0 when absent). */
export async function appMetric(app: App, sample: string): Promise<number> {
  return (await appSample(app, sample)) ?? 0;
}

/** Resolves at the wall-clock instant `epochMs` (at once if it has passed). */
export const untilClock = (epochMs: number) =>
  new Promise((resolve) => setTimeout(resolve, Math.max(0, epochMs - Date.now())));

/** What KeyDB must hold, computed independently from Postgres with the full aggregate: `{ '1_Visa': '1300', … }`. */
export async function expectedBalances(db: pg.Pool): Promise<Record<string, string>> {
  return Object.fromEntries(
    (
      await rows(
        db,
        `SELECT d.id || '_' || d.provider_name AS key,
                trim_scale(d.initial_value + coalesce((SELECT sum(transaction_value) FROM historical_transactions h
                                                      WHERE h.provider_id = d.id), 0))::text AS balance
         FROM initial_data d`,
      )
    ).map((r) => [r.key as string, r.balance as string]),
  );
}

/** Every balance KeyDB holds now, by key; the sync's own keys (`balance-sync:*`, the fence) aside. */
export async function keydbBalances(keydb: Redis): Promise<Record<string, string | null>> {
  const keys = (await keydb.keys('*')).filter((key) => !key.startsWith('balance-sync:')).sort();
  const values = keys.length > 0 ? await keydb.mget(...keys) : [];
  return Object.fromEntries(keys.map((key, i) => [key, values[i] ?? null]));
}

/**
 * Waits until the app holds no delivery and no IngestTransaction of `taskQueue` runs, so that a row
 * count read next is final (a run still open could add one).
 */
export async function untilIngestSettled(app: App, taskQueue: string): Promise<void> {
  await waitFor('nothing in flight', async () =>
    (await appMetric(app, 'balance_sync_bridge_deliveries_in_flight')) === 0 ? true : undefined,
  );
  await waitFor('no IngestTransaction running', async () => {
    const running = await app.client.workflow.count(
      `WorkflowType = 'IngestTransaction' AND ExecutionStatus = 'Running' AND TaskQueue = '${taskQueue}'`,
    );
    return running.count === 0 ? true : undefined;
  });
}

/** An in-process app's /readyz: its status, checks and the failing checks' reasons. */
export async function appReadiness(
  app: App,
): Promise<{ status: number; checks: Record<string, boolean>; reasons: Record<string, string> }> {
  const response = await fetch(`http://127.0.0.1:${app.httpPort}/readyz`);
  const { checks, reasons } = (await response.json()) as {
    checks?: Record<string, boolean>;
    reasons?: Record<string, string>;
  };
  return { status: response.status, checks: checks ?? {}, reasons: reasons ?? {} };
}

export async function rows(db: pg.Pool, sql: string, params: unknown[] = []) {
  return (await db.query(sql, params)).rows as Record<string, unknown>[];
}

/**
 * rabbitmqctl, without blocking the event loop (an app under test may run in this process); a listing
 * comes back as rows of tab-separated fields.
 */
export async function rabbitmqctl(...args: string[]): Promise<string[][]> {
  const listing = args[0]!.startsWith('list_') ? ['--no-table-headers'] : [];
  const { stdout } = await promisify(execFile)('rabbitmqctl', ['-q', ...listing, ...args], {
    encoding: 'utf8',
  });
  return stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => line.split('\t'));
}

/** The app's RabbitMQ connections for this task queue on the broker (pid), each consuming or publishing. */
export async function bridgeConnections(taskQueue: string): Promise<{ pid: string; consuming: boolean }[]> {
  const mine = `balance-sync bridge ${taskQueue}`;
  return (await rabbitmqctl('list_connections', 'pid', 'client_properties'))
    .filter(([, properties]) => properties?.includes(mine))
    .map(([pid, properties]) => ({ pid: pid!, consuming: !properties!.includes(`${mine} publishing`) }));
}

/** Broker-side pids of the app's RabbitMQ connections (consuming and publishing) for this task queue. */
export async function bridgeConnectionPids(
  taskQueue: string,
  which: 'all' | 'consuming' = 'all',
): Promise<string[]> {
  return (await bridgeConnections(taskQueue))
    .filter((connection) => which === 'all' || connection.consuming)
    .map(({ pid }) => pid);
}

/** Force-closes, on the broker side, the bridge connections of the app using this task queue. */
export async function closeBridgeConnections(taskQueue: string): Promise<number> {
  const pids = await bridgeConnectionPids(taskQueue);
  await Promise.all(pids.map((pid) => rabbitmqctl('close_connection', pid, 'test: forced close')));
  return pids.length;
}
