// The benchmarks' own resources: a Temporal dev server, a bench database, queues, a KeyDB db index.
import amqplib from 'amqplib';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import {
  freePort,
  SQLITE_PRAGMAS,
  startDevServer as startSharedDevServer,
  type DevServer as SharedDevServer,
  type DevServerOptions,
} from '../../test/support/dev-server.js';
import { progress, sleep, trackChild } from './util.js';

export const ADMIN_DATABASE_URL =
  process.env.BENCH_ADMIN_DATABASE_URL ?? 'postgres://user:password@127.0.0.1:5432/fxc';
export const RABBITMQ_URL = process.env.BENCH_RABBITMQ_URL ?? 'amqp://user:password@127.0.0.1:5672';
export const REDIS_BASE_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379';

export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

export function temporalCli(): string {
  return execFileSync('bash', [`${REPO_ROOT}scripts/ensure-temporal.sh`], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  }).trim();
}

export function commandVersion(command: string, args: string[]): string {
  try {
    return execFileSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
      .trim()
      .split('\n')[0]!;
  } catch {
    return 'unknown';
  }
}

export { freePort, SQLITE_PRAGMAS };

export interface DevServer extends SharedDevServer {
  pid: number;
}

/**
 * test/support's dev server (free ports; in memory, or on `dbFile` with the SQLite settings compose
 * uses unless `sqlitePragmas` says otherwise), killed with the bench if it exits early.
 */
export async function startDevServer(options: DevServerOptions = {}): Promise<DevServer> {
  const server = await startSharedDevServer(temporalCli(), options);
  trackChild(server.process);
  const pragmas = options.dbFile ? (options.sqlitePragmas ?? SQLITE_PRAGMAS).join(', ') || 'no pragmas' : '';
  progress(
    `temporal dev server ${server.address} (pid ${server.process.pid}${options.dbFile ? `, ${options.dbFile}, ${pragmas}` : ''}; log ${server.logFile})`,
  );
  return { ...server, pid: server.process.pid! };
}

export function databaseUrl(database: string): string {
  const url = new URL(ADMIN_DATABASE_URL);
  url.pathname = `/${database}`;
  return url.toString();
}

async function admin<T>(run: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: ADMIN_DATABASE_URL });
  await client.connect();
  try {
    return await run(client);
  } finally {
    await client.end();
  }
}

const SAFE_NAME = /^balance_sync_bench[a-z0-9_]*$/;

/**
 * (Re)creates a bench database with the producer's two tables (same DDL as fixtures/producer-schema.sql)
 * and `providers` rows in initial_data, ids 1..providers. Only names starting balance_sync_bench.
 */
export async function createBenchDatabase(database: string, providers: number): Promise<string> {
  if (!SAFE_NAME.test(database)) throw new Error(`refusing to create ${database}`);
  await admin(async (client) => {
    await client.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
    await client.query(`CREATE DATABASE ${database}`);
  });
  const url = databaseUrl(database);
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(`
      CREATE TABLE initial_data (
        id SERIAL PRIMARY KEY,
        provider_name VARCHAR(255) NOT NULL,
        initial_value NUMERIC NOT NULL
      );
      CREATE TABLE historical_transactions (
        id SERIAL PRIMARY KEY,
        provider_id INTEGER REFERENCES initial_data(id),
        transaction_value NUMERIC NOT NULL
      );
      INSERT INTO initial_data (provider_name, initial_value)
      SELECT 'provider' || i, (i * 1000)::numeric FROM generate_series(1, ${Number(providers)}) AS i;`);
  } finally {
    await client.end();
  }
  return url;
}

export async function dropBenchDatabase(database: string): Promise<void> {
  if (!SAFE_NAME.test(database)) throw new Error(`refusing to drop ${database}`);
  await admin((client) => client.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`));
}

/** pids of the Postgres backends connected to `database` right now. */
export async function backendPids(pool: pg.Pool, database: string): Promise<number[]> {
  const { rows } = await pool.query<{ pid: number }>(
    'SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
    [database],
  );
  return rows.map((row) => row.pid);
}

export async function deleteQueues(...queues: string[]): Promise<void> {
  const connection = await amqplib.connect(RABBITMQ_URL);
  try {
    const channel = await connection.createChannel();
    for (const queue of queues) await channel.deleteQueue(queue);
  } finally {
    await connection.close();
  }
}

export interface BenchMessage {
  messageId: string;
  providerId: number;
  value: string;
}

export function benchMessage(prefix: string, seq: number, providers: number): BenchMessage {
  const cents = ((seq * 7919) % 200_001) - 100_000; // deterministic, both signs
  const sign = cents < 0 ? '-' : '';
  const abs = Math.abs(cents);
  return {
    messageId: `${prefix}-${seq}`,
    providerId: (seq % providers) + 1,
    value: `${sign}${Math.floor(abs / 100)}.${String(abs % 100).padStart(2, '0')}`,
  };
}

export interface Publisher {
  /** Sends one message now (persistent); returns the send time (epoch ms). Confirms are awaited later. */
  send(message: BenchMessage): number;
  /** Waits for the broker to confirm everything sent so far. */
  confirm(): Promise<void>;
  close(): Promise<void>;
}

/** A confirm-channel publisher declaring the queue as the producer does (durable, no arguments). */
export async function publisher(queue: string): Promise<Publisher> {
  const connection = await amqplib.connect(RABBITMQ_URL);
  const channel = await connection.createConfirmChannel();
  await channel.assertQueue(queue, { durable: true });
  return {
    send(message) {
      const sentAt = Date.now();
      channel.sendToQueue(queue, Buffer.from(`{"id": ${message.providerId}, "value": ${message.value}}`), {
        persistent: true,
        messageId: message.messageId,
        contentType: 'application/json',
      });
      return sentAt;
    },
    confirm: () => channel.waitForConfirms(),
    async close() {
      await connection.close();
    },
  };
}

/** Publishes `count` messages as fast as the broker confirms them (in chunks of 500). */
export async function publishBacklog(queue: string, prefix: string, count: number, providers: number) {
  const pub = await publisher(queue);
  const started = performance.now();
  for (let seq = 0; seq < count; seq++) {
    pub.send(benchMessage(prefix, seq, providers));
    if (seq % 500 === 499) await pub.confirm();
  }
  await pub.confirm();
  await pub.close();
  const seconds = (performance.now() - started) / 1000;
  progress(`published ${count} messages to ${queue} in ${seconds.toFixed(1)} s`);
  return seconds;
}

/** Messages currently ready on a queue. */
export async function queueDepth(queue: string): Promise<number> {
  const connection = await amqplib.connect(RABBITMQ_URL);
  try {
    const channel = await connection.createChannel();
    const { messageCount } = await channel.assertQueue(queue, { durable: true });
    return messageCount;
  } finally {
    await connection.close();
  }
}

/**
 * Waits (up to `timeoutMs`) until Postgres, Redis and RabbitMQ all answer: on a shared machine another
 * process (e.g. the fault suite) may be restarting one of them.
 */
export async function waitForServices(timeoutMs = 180_000): Promise<void> {
  const { Redis } = await import('ioredis');
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0; ; attempt++) {
    const problems: string[] = [];
    await admin((client) => client.query('SELECT 1')).catch(() => problems.push('Postgres'));
    const redis = new Redis(REDIS_BASE_URL, {
      lazyConnect: true,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    redis.on('error', () => undefined);
    await redis
      .connect()
      .then(() => redis.ping())
      .catch(() => problems.push('Redis'));
    redis.disconnect();
    await amqplib
      .connect(RABBITMQ_URL)
      .then((connection) => connection.close())
      .catch(() => problems.push('RabbitMQ'));
    if (problems.length === 0) return;
    if (Date.now() > deadline) throw new Error(`services not reachable: ${problems.join(', ')}`);
    if (attempt % 10 === 0) progress(`waiting for ${problems.join(', ')} (restarted by another process?)`);
    await sleep(1000);
  }
}
