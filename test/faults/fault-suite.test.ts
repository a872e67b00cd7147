import amqp from 'amqp-connection-manager';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import pRetry from 'p-retry';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Config } from '../../src/config.js';
import { REASON_CODE_HEADER } from '../../src/bridge/dead-letter.js';
import { spawnApp, waitUntilReady, type AppProcess } from '../support/app-process.js';
import { freePort, startDevServer } from '../support/dev-server.js';
import { drainQueue, resetDatabase, rows, testConfig, waitFor } from '../support/harness.js';
import { startOwnTemporalCluster, type RestartableTemporal } from '../support/temporal-cluster.js';
import {
  startThrowawayPostgres,
  startThrowawayRabbitmq,
  startThrowawayRedis,
  type ThrowawayService,
} from '../support/throwaway-services.js';

/**
 * The fault suite: publishes N messages with message_id at a steady rate while it kill -9s the app
 * (3 times), restarts RabbitMQ, Postgres and the (file-backed) Temporal dev server, and stops Redis
 * across a minute boundary. Then: exactly N rows, exact balances in KeyDB as the schedule itself wrote
 * them at the next minute, exactly the injected bad messages in the dead-letter queue. `npm run test:faults` runs the full size; `npm test` a short one.
 * Every service it restarts is its own throw-away instance (test/support/throwaway-services.ts): the
 * machine's Postgres, Redis and RabbitMQ are never touched. With TEST_TEMPORAL_ADDRESS (the run is
 * against a cluster) it restarts a Temporal cluster of its own (scripts/temporal-cluster.sh, on
 * databases of its own), not the server at that address: the other files of the run use that one.
 */
const MESSAGES = Number(process.env.FAULT_MESSAGES ?? 300);
const RATE = Number(process.env.FAULT_RATE ?? 15);
const BAD_EVERY = 50;

/** The file-backed dev server, restarted on the same port and file. */
async function startFileBackedDevServer(cli: string): Promise<RestartableTemporal> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'balance-sync-faults-'));
  const dbFile = join(dir, 'temporal.db');
  let server = await startDevServer(cli, { port, dbFile });
  return {
    address: server.address,
    namespace: 'default',
    async restart() {
      await server.stop();
      server = await startDevServer(cli, { port, dbFile });
    },
    async stop() {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe('fault suite', () => {
  let db: pg.Pool;
  let config: Config;
  let temporal: RestartableTemporal | undefined;
  let app: AppProcess;
  let postgres: ThrowawayService | undefined;
  let redis: ThrowawayService | undefined;
  let rabbitmq: ThrowawayService | undefined;
  const appRestarts: number[] = [];

  beforeAll(async () => {
    // Each assigned as it comes up, and all awaited, so afterAll stops what started if one fails.
    const starts = await Promise.allSettled([
      startThrowawayPostgres().then((service) => (postgres = service)),
      startThrowawayRedis().then((service) => (redis = service)),
      startThrowawayRabbitmq().then((service) => (rabbitmq = service)),
      (process.env.TEST_TEMPORAL_ADDRESS
        ? startOwnTemporalCluster('faults')
        : startFileBackedDevServer(inject('temporalCliPath'))
      ).then((server) => (temporal = server)),
    ]);
    for (const start of starts) if (start.status === 'rejected') throw start.reason;
    db = new pg.Pool({ connectionString: postgres!.url, max: 4 });
    // An idle client killed by the Postgres restart is dropped; the next query reconnects.
    db.on('error', () => undefined);
    await resetDatabase(db);
    config = testConfig({
      TEMPORAL_ADDRESS: temporal!.address,
      TEMPORAL_NAMESPACE: temporal!.namespace,
      DATABASE_URL: postgres!.url,
      KEYDB_URL: redis!.url,
      RABBITMQ_URL: rabbitmq!.url,
    });
    app = await spawnApp(config);
    await waitUntilReady(app);
  });

  afterAll(async () => {
    try {
      await app?.kill('SIGKILL');
      await temporal?.stop();
      await db?.end();
    } finally {
      for (const service of [postgres, redis, rabbitmq]) await service?.stop();
    }
  });

  it(
    `loses and doubles nothing across crashes and restarts (${MESSAGES} messages)`,
    async () => {
      const ledgerCount = async () =>
        Number(
          (
            await rows(
              db,
              `SELECT count(*) AS n FROM balance_sync_ingest_ledger WHERE ingest_key LIKE 'ingest-fault-%'`,
            )
          )[0]!.n,
        );

      // Progress monitor: (time, rows) samples, to measure the processing gap after each fault.
      const samples: { at: number; count: number }[] = [];
      let monitoring = true;
      const monitor = (async () => {
        while (monitoring) {
          try {
            samples.push({ at: Date.now(), count: await ledgerCount() });
          } catch {
            // Postgres is restarting: no sample.
          }
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
      })();

      // A publisher that rides out broker restarts: it queues while disconnected, resolves on confirm.
      const connection = amqp.connect([rabbitmq!.url], { reconnectTimeInSeconds: 0.5 });
      const channel = connection.createChannel({ confirm: true });
      const bad: string[] = [];
      // A publish whose confirm is lost to a broker restart is sent again (same message_id, so the
      // app dedupes it): the producer side is at-least-once, as any real producer's would be.
      const publish = (body: string, messageId: string) =>
        pRetry(
          () =>
            channel.sendToQueue(config.INCOMING_QUEUE, Buffer.from(body), { persistent: true, messageId }),
          {
            retries: 50,
            minTimeout: 200,
            maxTimeout: 2_000,
          },
        );
      const publishing = (async () => {
        const started = Date.now();
        const pending: Promise<unknown>[] = [];
        for (let i = 0; i < MESSAGES; i++) {
          const due = started + (i * 1000) / RATE;
          if (due > Date.now()) await new Promise((resolve) => setTimeout(resolve, due - Date.now()));
          const body = `{"id": ${1 + (i % 2)}, "value": ${i}.${String(i % 100).padStart(2, '0')}}`;
          pending.push(publish(body, `fault-${i}`));
          if (i % BAD_EVERY === 0) {
            const id = `fault-bad-${i}`;
            bad.push(id);
            pending.push(publish(`{"id": 1, "value": "NaN-${i}"}`, id));
          }
        }
        await Promise.all(pending);
      })();

      // The faults, spread over the publishing window.
      const faults: { fault: string; at: number }[] = [];
      const publishSeconds = MESSAGES / RATE;
      const at = async (fraction: number) => {
        const due = samples[0]!.at + fraction * publishSeconds * 1000;
        if (due > Date.now()) await new Promise((resolve) => setTimeout(resolve, due - Date.now()));
      };
      const killApp = async () => {
        faults.push({ fault: 'kill -9 app', at: Date.now() });
        await app.kill('SIGKILL');
        appRestarts.push(Date.now());
        app = await spawnApp(config);
      };
      await waitFor('monitor', () => Promise.resolve(samples.length > 0 ? true : undefined));
      await at(0.1);
      await killApp();
      await at(0.2);
      faults.push({ fault: 'restart RabbitMQ', at: Date.now() });
      await rabbitmq!.restart();
      await at(0.3);
      await killApp();
      await at(0.4);
      faults.push({ fault: 'restart Postgres', at: Date.now() });
      await postgres!.restart();
      await at(0.5);
      faults.push({ fault: 'restart Temporal', at: Date.now() });
      await temporal!.restart();
      await at(0.6);
      await killApp();
      // Redis down across a minute boundary: that minute's sync fails visibly, the next one writes.
      faults.push({ fault: 'stop Redis across a minute', at: Date.now() });
      await redis!.halt();
      const nextMinute = Math.ceil((Date.now() + 1000) / 60_000) * 60_000;
      await new Promise((resolve) => setTimeout(resolve, nextMinute + 1500 - Date.now()));
      await redis!.start();

      await publishing;
      await waitFor(
        'every message processed',
        async () => ((await ledgerCount()) === MESSAGES ? true : undefined),
        300_000,
      ).catch(async (error: Error) => {
        // Say where it stood, so a red run can be read without a rerun.
        const warnings = app.lines.filter((line) => /"level":(40|50|60)/.test(line)).slice(-20);
        throw new Error(
          `${error.message}: ${await ledgerCount().catch(() => '?')} of ${MESSAGES} recorded; ` +
            `faults ${JSON.stringify(faults)}; the app's last warnings:\n${warnings.join('\n')}`,
        );
      });
      monitoring = false;
      await monitor;
      await channel.close();
      await connection.close();

      // Exactly N rows: none missing, none doubled, checked against the published IDs.
      const written = await rows(
        db,
        `SELECT l.ingest_key, h.transaction_value::text AS value FROM balance_sync_ingest_ledger l
       JOIN historical_transactions h ON h.id = l.transaction_id WHERE l.ingest_key LIKE 'ingest-fault-%'`,
      );
      const expectedKeys = new Set(Array.from({ length: MESSAGES }, (_, i) => `ingest-fault-${i}`));
      const missing = [...expectedKeys].filter((key) => !written.some((row) => row.ingest_key === key));
      const totalRows = Number((await rows(db, 'SELECT count(*) AS n FROM historical_transactions'))[0]!.n);
      const duplicates = totalRows - 3 - written.length; // 3 seed rows

      // Every KeyDB balance equals the full aggregate, computed independently, as the schedule itself
      // wrote it at the first minute after the last row: no on-demand sync here, so a schedule that
      // stopped (deleted, paused, its runs failing) fails the suite. Only a scheduled run records
      // its minute in balance_sync_sync_state.
      const lastRowSeenAt = Date.now();
      const publishedMinute = await waitFor(
        'the schedule to publish a minute after the last row',
        async () => {
          const boundary = (
            await rows(db, 'SELECT last_published_boundary AS b FROM balance_sync_sync_state')
          )[0]?.b as Date | undefined;
          return boundary && boundary.getTime() > lastRowSeenAt ? boundary : undefined;
        },
        3 * 60_000,
      );
      const expected = await rows(
        db,
        `SELECT d.id || '_' || d.provider_name AS key,
              trim_scale(d.initial_value + coalesce(sum(h.transaction_value), 0))::text AS balance
       FROM initial_data d LEFT JOIN historical_transactions h ON h.provider_id = d.id GROUP BY d.id ORDER BY d.id`,
      );
      const keydb = new Redis(redis!.url);
      const actual = await keydb.mget(...expected.map((row) => row.key as string));
      keydb.disconnect();

      // The dead-letter queue holds exactly the injected bad messages.
      const dead = await drainQueue(config.DEAD_LETTER_QUEUE, rabbitmq!.url);
      const deadIds = dead.map((message) => message.properties.messageId as string);

      // The longest stretch without a new row in the 30 s after each fault began.
      const gaps = faults.map(({ fault, at: start }) => {
        const window = samples.filter((s) => s.at >= start - 200 && s.at <= start + 30_000);
        let longest = 0;
        let lastProgress = window[0]?.at ?? start;
        for (let i = 1; i < window.length; i++) {
          if (window[i]!.count > window[i - 1]!.count || window[i]!.count === MESSAGES) {
            longest = Math.max(longest, window[i]!.at - lastProgress);
            lastProgress = window[i]!.at;
          }
        }
        return { fault, gapSeconds: (longest / 1000).toFixed(1) };
      });
      const report = [
        ['published', MESSAGES + bad.length],
        ['valid published', MESSAGES],
        ['rows written', written.length],
        ['duplicates', duplicates],
        ['missing', missing.length],
        ['bad published', bad.length],
        ['dead-lettered', dead.length],
        ['distinct dead-lettered', new Set(deadIds).size],
        ['restarts survived', faults.length],
        ['minute compared (published by the schedule)', publishedMinute.toISOString()],
        ...gaps.map(({ fault, gapSeconds }) => [`longest gap after ${fault} (s)`, gapSeconds]),
      ];
      console.log(
        ['| figure | value |', '| --- | --- |', ...report.map(([k, v]) => `| ${k} | ${v} |`)].join('\n'),
      );

      expect(missing).toEqual([]);
      expect(duplicates).toBe(0);
      expect(written).toHaveLength(MESSAGES);
      expect(actual).toEqual(expected.map((row) => row.balance));
      expect(new Set(deadIds)).toEqual(new Set(bad));
      expect(
        dead.every((message) => message.properties.headers?.[REASON_CODE_HEADER] === 'invalid_value'),
      ).toBe(true);
      expect(appRestarts.length).toBeGreaterThanOrEqual(3);
    },
    (MESSAGES / RATE + 900) * 1000,
  );
});
