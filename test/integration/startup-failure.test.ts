import { Redis } from 'ioredis';
import { connect } from 'node:net';
import { randomUUID } from 'node:crypto';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../support/dev-server.js';
import {
  bridgeConnectionPids,
  KEYDB_URL,
  PRODUCER_FIXTURE,
  startTestApp,
  testConfig,
} from '../support/harness.js';
import { createScratchDatabase, type ScratchDatabase } from '../support/scratch-database.js';

/**
 * How long a closed connection may still be listed by its server. Well under the ingest pool's
 * 10 s idle timeout, which would end an idle Postgres connection without anyone closing the pool.
 */
const GONE_WITHIN_MS = 3_000;

/**
 * Start-up stopped half-way, after the HTTP server, the pools, the KeyDB client and (at the
 * schedules) the Temporal connection, the RabbitMQ connections and the workers were opened: startApp
 * rejects with the original error, and nothing it opened is left open.
 */
describe('a start-up that fails half-way', () => {
  let good: ScratchDatabase;
  let keydb: Redis;

  beforeAll(async () => {
    good = await createScratchDatabase('startup_failure');
    await good.pool.query(PRODUCER_FIXTURE);
    keydb = new Redis(KEYDB_URL);
  });

  afterAll(async () => {
    keydb.disconnect();
    await good.drop();
  });

  /** Starts the app in this process, on its own port, with a KeyDB connection named after the test. */
  async function failedStart(database: ScratchDatabase, overrides: Record<string, string> = {}) {
    const keydbName = `balance-sync-startup-${randomUUID().slice(0, 8)}`;
    const keydbUrl = new URL(KEYDB_URL);
    keydbUrl.searchParams.set('connectionName', keydbName);
    const port = await freePort();
    const config = testConfig({
      DATABASE_URL: database.url,
      KEYDB_URL: keydbUrl.toString(),
      HTTP_PORT: String(port),
      BALANCES_API_TOKEN: 'startup-failure-test-token',
      ...overrides,
    });
    const logged: string[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void logged.push(JSON.parse(line).msg) });
    const error = await startTestApp(config, log).then(
      () => new Error('start-up succeeded'),
      (failure: unknown) => failure as Error,
    );
    return { error, port, config, keydbName, database: new URL(database.url).pathname.slice(1), logged };
  }

  /** What the failed start left open, once its servers have had GONE_WITHIN_MS to see it closed. */
  async function leftOpen(opened: Awaited<ReturnType<typeof failedStart>>) {
    const look = async () => ({
      http: (await connectionRefused(opened.port)) ? [] : [`port ${opened.port} accepts connections`],
      postgres: await appBackends(opened.database),
      keydb: await keydbClients(opened.keydbName),
      rabbitmq: await bridgeConnectionPids(opened.config.TEMPORAL_TASK_QUEUE),
    });
    let open = await look();
    const deadline = Date.now() + GONE_WITHIN_MS;
    while (Object.values(open).some((list) => list.length > 0) && Date.now() < deadline) open = await look();
    return open;
  }

  const NOTHING = { http: [], postgres: [], keydb: [], rabbitmq: [] };

  async function appBackends(database: string): Promise<string[]> {
    const { rows } = await good.pool.query<{ application_name: string }>(
      `SELECT application_name FROM pg_stat_activity
       WHERE datname = $1 AND application_name LIKE 'balance-sync %'`,
      [database],
    );
    return rows.map((row) => row.application_name);
  }

  async function keydbClients(name: string): Promise<string[]> {
    const list = (await keydb.call('CLIENT', 'LIST')) as string;
    return list.split('\n').filter((line) => line.includes(` name=${name} `));
  }

  it('closes the HTTP server, the pools and the KeyDB client when migrate throws', async () => {
    const broken = await createScratchDatabase('startup_failure_broken');
    try {
      await broken.pool.query(PRODUCER_FIXTURE);
      // A table of an unknown shape under one of the app's names: its index cannot be created.
      await broken.pool.query('CREATE TABLE balance_sync_balance_changes (key text)');
      const opened = await failedStart(broken);
      expect(opened.error.message).toMatch(/column "instant" does not exist/);
      expect(opened.logged).toContain('http endpoints ready');
      expect(await leftOpen(opened)).toEqual(NOTHING);
    } finally {
      await broken.drop();
    }
  });

  it('closes the HTTP server, the pools and the KeyDB client when Temporal cannot be reached', async () => {
    const opened = await failedStart(good, {
      TEMPORAL_ADDRESS: `127.0.0.1:${await freePort()}`,
      STARTUP_WAIT_SECONDS: '0',
    });
    expect(opened.error.message).toMatch(/connect/i);
    expect(opened.logged).toContain('cannot reach Temporal yet');
    expect(opened.logged).toContain('http endpoints ready');
    expect(await leftOpen(opened)).toEqual(NOTHING);
  });

  it('closes the workers, the RabbitMQ and Temporal connections, and all the above when ensureSchedules throws', async () => {
    const opened = await failedStart(good, { TEMPORAL_NAMESPACE: `missing-${randomUUID().slice(0, 8)}` });
    expect(opened.error.message).toMatch(/namespace/i);
    expect(opened.logged.filter((line) => line === 'connected to RabbitMQ')).toHaveLength(2);
    expect(opened.logged).toContain('http endpoints ready');
    expect(await leftOpen(opened)).toEqual(NOTHING);
  });
});

/** True when nothing accepts a TCP connection on the port. */
async function connectionRefused(port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code === 'ECONNREFUSED'));
  });
}
