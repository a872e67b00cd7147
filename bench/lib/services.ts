// The benchmarks' own resources: a Temporal dev server, a bench database, queues, a KeyDB db index.
import amqplib from 'amqplib';
import { execFileSync, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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

/** What the drains need of a Temporal server: a dev server, or the cluster of scripts/temporal-cluster.sh. */
export interface TemporalServer {
  address: string;
  /** The server's process (all of it: the cluster runs its four services in one process). */
  pid: number;
  logFile: string;
  /** Databases of its persistence in the bench's Postgres, whose backends are Temporal's Postgres CPU. */
  databases?: string[];
  stop(): Promise<void>;
}

export interface DevServer extends SharedDevServer, TemporalServer {
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

/**
 * Temporal 1.29.1 with the production topology (PostgreSQL persistence, SQL visibility), started by
 * scripts/temporal-cluster.sh on databases of the bench's own in the bench's Postgres (as the admin
 * URL's user; created fresh, dropped by `stop`), with its config, pid and log in a temporary directory,
 * so a developer's or CI's cluster is neither used nor stopped. Stopped too if the bench exits early.
 */
export async function startTemporalCluster(tag: string, shards: number): Promise<TemporalServer> {
  const admin = new URL(ADMIN_DATABASE_URL);
  const database = `balance_sync_bench_${tag}_temporal`;
  const databases = [database, `${database}_visibility`];
  for (const name of databases) await dropBenchDatabase(name);
  const dir = await mkdtemp(join(tmpdir(), 'bench-temporal-cluster-'));
  const script = `${REPO_ROOT}scripts/temporal-cluster.sh`;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    TEMPORAL_CLUSTER_PG_HOST: admin.hostname,
    TEMPORAL_CLUSTER_PG_PORT: admin.port || '5432',
    TEMPORAL_CLUSTER_PG_USER: decodeURIComponent(admin.username),
    TEMPORAL_CLUSTER_PG_PASSWORD: decodeURIComponent(admin.password),
    TEMPORAL_CLUSTER_DB: databases[0],
    TEMPORAL_CLUSTER_VISIBILITY_DB: databases[1],
    TEMPORAL_CLUSTER_SHARDS: String(shards),
    TEMPORAL_CLUSTER_DIR: dir,
  };
  delete env.TEMPORAL_CLUSTER_PORT; // free ports
  const stopNow = () => {
    try {
      execFileSync('bash', [script, 'stop'], { env, stdio: 'ignore' });
    } catch {
      // already gone
    }
  };
  process.on('exit', stopNow);
  const started = performance.now();
  const address = await new Promise<string>((resolve, reject) => {
    const child = spawn('bash', [script, 'start'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    child.once('error', reject);
    child.once('exit', (code) =>
      code === 0
        ? resolve(out.trim().split('\n').pop()!)
        : reject(new Error(`scripts/temporal-cluster.sh start exited ${code}`)),
    );
  }).catch(async (error: unknown) => {
    stopNow();
    process.off('exit', stopNow);
    for (const name of databases) await dropBenchDatabase(name).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
    throw error;
  });
  const pid = Number((await readFile(join(dir, 'server.pid'), 'utf8')).trim());
  const logFile = join(dir, 'server.log');
  progress(
    `temporal cluster ${address} (pid ${pid}, ${shards} shards, databases ${databases.join(', ')}; ` +
      `${((performance.now() - started) / 1000).toFixed(1)} s to serve; log ${logFile})`,
  );
  return {
    address,
    pid,
    logFile,
    databases,
    async stop() {
      stopNow();
      process.off('exit', stopNow);
      for (const name of databases) await dropBenchDatabase(name);
      await rm(dir, { recursive: true, force: true });
    },
  };
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

/** pids of the Postgres backends connected to `database` (or any of several) right now. */
export async function backendPids(pool: pg.Pool, database: string | string[]): Promise<number[]> {
  const names = typeof database === 'string' ? [database] : database;
  if (names.length === 0) return [];
  const { rows } = await pool.query<{ pid: number }>(
    'SELECT pid FROM pg_stat_activity WHERE datname = ANY($1) AND pid <> pg_backend_pid()',
    [names],
  );
  return rows.map((row) => row.pid);
}

const parentPid = (pid: number): number | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
};

/**
 * The local Postgres's own processes that serve no client: the postmaster and its children that are
 * not client backends (WAL writer, checkpointer, background writer, autovacuum, …). Machine-wide:
 * shared with every database of that Postgres, so attributable to a bench only on a quiet machine.
 * Empty if Postgres is not on this machine.
 */
export async function postgresBackgroundPids(pool: pg.Pool): Promise<number[]> {
  const { rows } = await pool.query<{ pid: number; own: boolean }>(
    `SELECT pid, pid = pg_backend_pid() AS own FROM pg_stat_activity WHERE backend_type = 'client backend'`,
  );
  const own = rows.find((row) => row.own)?.pid;
  const postmaster = own === undefined ? undefined : parentPid(own);
  if (!postmaster || !existsPid(postmaster)) return [];
  const clients = new Set(rows.map((row) => row.pid));
  const children = readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .map(Number)
    .filter((pid) => !clients.has(pid) && parentPid(pid) === postmaster);
  return [postmaster, ...children];
}

function existsPid(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').startsWith('postgres');
  } catch {
    return false;
  }
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
