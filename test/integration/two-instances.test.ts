import { execFileSync } from 'node:child_process';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Config } from '../../src/config.js';
import { spawnApp, waitUntilReady, type AppProcess } from '../support/app-process.js';
import {
  deleteQueues,
  pool,
  publisher,
  resetDatabase,
  resetKeydb,
  rows,
  temporalClient,
  testConfig,
  waitFor,
} from '../support/harness.js';

/** Two app processes on the same Postgres, RabbitMQ, KeyDB, namespace and task queue. */
describe('two instances', () => {
  let db: pg.Pool;
  let config: Config;
  let apps: AppProcess[];

  beforeAll(async () => {
    db = pool();
    await resetDatabase(db);
    await (await resetKeydb()).quit();
    config = testConfig();
    // Started at the same moment: migrations and schedule creation race.
    apps = await Promise.all([spawnApp(config), spawnApp(config)]);
    await Promise.all(apps.map((app) => waitUntilReady(app)));
  });

  afterAll(async () => {
    await Promise.all(apps.map((app) => app.kill('SIGKILL')));
    const client = await temporalClient();
    for (const id of [config.SYNC_SCHEDULE_ID, config.RECONCILE_SCHEDULE_ID]) {
      await client.schedule
        .getHandle(id)
        .delete()
        .catch(() => undefined);
    }
    await client.connection.close();
    await deleteQueues(config.INCOMING_QUEUE, config.DEAD_LETTER_QUEUE);
    await db.end();
  });

  it('start together without errors, both consume and both poll, with one schedule', async () => {
    for (const app of apps) expect(app.lines.filter((line) => /"level":(50|60)/.test(line))).toEqual([]);
    const consumers = execFileSync(
      'rabbitmqctl',
      ['-q', '--no-table-headers', 'list_queues', 'name', 'consumers'],
      {
        encoding: 'utf8',
      },
    )
      .split('\n')
      .find((line) => line.startsWith(`${config.INCOMING_QUEUE}\t`));
    expect(consumers?.split('\t')[1]).toBe('2');

    const client = await temporalClient();
    const pollers = await waitFor('both workers polling', async () => {
      const { pollers: found } = await client.workflowService.describeTaskQueue({
        namespace: inject('temporalNamespace'),
        taskQueue: { name: config.TEMPORAL_TASK_QUEUE },
        taskQueueType: 1, // workflow tasks
      });
      const identities = new Set(found?.map((poller) => poller.identity));
      return identities.size === 2 ? identities : undefined;
    });
    expect(pollers.size).toBe(2);
    const ids: string[] = [];
    for await (const schedule of client.schedule.list()) ids.push(schedule.scheduleId);
    expect(ids.filter((id) => id === config.SYNC_SCHEDULE_ID)).toHaveLength(1);
    expect(ids.filter((id) => id === config.RECONCILE_SCHEDULE_ID)).toHaveLength(1);
    await client.connection.close();
  });

  it('shares the work, and the survivor finishes it when one is killed mid-stream: exactly N rows', async () => {
    const count = 400;
    const queue = await publisher(config.INCOMING_QUEUE);
    await queue.publishMany(
      Array.from(
        { length: count },
        (_, i) => [`{"id": ${1 + (i % 2)}, "value": ${i}.5}`, { messageId: `two-${i}` }] as const,
      ),
    );
    await queue.close();
    const ledger = async () =>
      Number(
        (
          await rows(
            db,
            `SELECT count(*) AS n FROM balance_sync_ingest_ledger WHERE ingest_key LIKE 'ingest-two-%'`,
          )
        )[0]!.n,
      );
    await waitFor('a quarter of the rows', async () => ((await ledger()) >= count / 4 ? true : undefined));
    const acked = (app: AppProcess) =>
      app
        .get('/metrics')
        .then(({ body }) =>
          Number(/^balance_sync_messages_acked_total\{outcome="started"\} (\d+)/m.exec(body)?.[1] ?? 0),
        );
    // Both consumed some of the stream (a condition waited on, not read at one instant).
    await waitFor('both instances to have started workflows', async () => {
      const counts = await Promise.all(apps.map(acked));
      return counts.every((n) => n > 0) ? counts : undefined;
    });

    await apps[0]!.kill('SIGKILL');
    await waitFor('every row', async () => ((await ledger()) === count ? true : undefined), 120_000);
    const written = await rows(
      db,
      `SELECT count(*)::int AS n, count(DISTINCT transaction_value)::int AS values FROM historical_transactions WHERE id > 3`,
    );
    expect(written).toEqual([{ n: count, values: count }]);
    const drift = await rows(
      db,
      `SELECT provider_id FROM (SELECT provider_id, sum(transaction_value) AS total FROM historical_transactions GROUP BY 1) f
       FULL JOIN balance_sync_provider_sums s USING (provider_id) WHERE f.total IS DISTINCT FROM s.tx_sum`,
    );
    expect(drift).toEqual([]);
  });
});
