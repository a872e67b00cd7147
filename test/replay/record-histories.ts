import type { Client, WorkflowHandle } from '@temporalio/client';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { Redis } from 'ioredis';
import type pg from 'pg';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import type { App } from '../../src/app.js';
import type { Config } from '../../src/config.js';
import { liveInstanceQueues } from '../../src/keydb/sync-instances.js';
import {
  KEYDB_URL,
  pool,
  publisher,
  resetDatabase,
  resetKeydb,
  startTestApp,
  stopTestApp,
  testConfig,
  waitFor,
} from '../support/harness.js';

/**
 * Records the histories test/replay/replay.test.ts replays: `npm run replay:record` (about a minute,
 * as it waits for a scheduled SyncBalances run). Runs the real app on the suite's dev server, so the
 * histories are exactly what today's workflow code writes. Not part of `npm test`.
 */
let db: pg.Pool;
let config: Config;
let app: App;

beforeAll(async () => {
  db = pool();
  await resetDatabase(db);
  (await resetKeydb()).disconnect();
  config = testConfig();
  app = await startTestApp(config);
});

afterAll(async () => {
  await stopTestApp(app, config);
  await db.end();
});

/** Saves a history as `temporal workflow show --output json` prints it (what Worker.runReplayHistories reads). */
function save(name: string, handle: WorkflowHandle): void {
  const json = execFileSync(
    inject('temporalCliPath'),
    [
      'workflow',
      'show',
      '--address',
      inject('temporalAddress'),
      '--workflow-id',
      handle.workflowId,
      '--output',
      'json',
    ],
    { encoding: 'utf8' },
  );
  writeFileSync(new URL(`./${name}.json`, import.meta.url), `${JSON.stringify(JSON.parse(json), null, 2)}\n`);
}

/** The first workflow a schedule started whose nominal time satisfies `wanted`. */
async function scheduledRun(client: Client, scheduleId: string, wanted: (at: Date) => boolean) {
  const workflowId = await waitFor(
    `a run of ${scheduleId}`,
    async () =>
      (await client.schedule.getHandle(scheduleId).describe()).info.recentActions.find((a) =>
        wanted(a.scheduledAt),
      )?.action.workflow.workflowId,
    90_000,
  );
  return client.workflow.getHandle(workflowId);
}

it('records IngestTransaction, SyncBalances and ReconcileBalances histories', async () => {
  const { client } = app;

  // The start-up reconciliation.
  const reconcile = client.workflow.getHandle(`${config.RECONCILE_SCHEDULE_ID}-startup`);
  await reconcile.result();
  save('reconcile-balances-startup', reconcile);

  // An ingest through the bridge, as in production (eager start, local activity).
  const queue = await publisher(config.INCOMING_QUEUE);
  await queue.publish('{"id": 1, "value": 12.34}', { messageId: 'replay-ok' });
  await queue.close();
  const ingest = client.workflow.getHandle('ingest-replay-ok');
  await waitFor('the ingest workflow', async () => ((await ingest.result()) ? true : undefined));
  save('ingest-transaction-ok', ingest);

  // A failed ingest: the bridge dead-letters unknown providers, so start it directly.
  const unknown = await client.workflow.start('IngestTransaction', {
    taskQueue: config.TEMPORAL_TASK_QUEUE,
    workflowId: 'ingest-replay-unknown-provider',
    args: [{ providerId: 999, value: '1', receivedAtMs: Date.now() }],
  });
  await expect(unknown.result()).rejects.toThrow();
  save('ingest-transaction-unknown-provider', unknown);

  // An off-minute SyncBalances (a manual trigger publishes at once).
  const triggeredAt = Date.now();
  await client.schedule.getHandle(config.SYNC_SCHEDULE_ID).trigger();
  const offMinute = await scheduledRun(
    client,
    config.SYNC_SCHEDULE_ID,
    (at) => at.getTime() >= triggeredAt - 1000 && at.getUTCSeconds() !== 60 - config.SYNC_LEAD_SECONDS,
  );
  await offMinute.result();
  save('sync-balances-off-minute', offMinute);

  // A scheduled SyncBalances, which waits for its minute boundary (up to a minute from now).
  const onMinute = await scheduledRun(
    client,
    config.SYNC_SCHEDULE_ID,
    (at) => at.getUTCSeconds() === 60 - config.SYNC_LEAD_SECONDS && at.getUTCMilliseconds() === 0,
  );
  await onMinute.result();
  save('sync-balances-on-minute', onMinute);

  // With a second instance, a scheduled SyncBalances races two writers, one on each instance's own queue.
  const second = await startTestApp(config);
  const keydb = new Redis(KEYDB_URL);
  await waitFor('two live instances', async () =>
    (await liveInstanceQueues(keydb, config.TEMPORAL_SYNC_TASK_QUEUE)).length === 2 ? true : undefined,
  );
  keydb.disconnect();
  const secondAt = Date.now();
  const racing = await scheduledRun(
    client,
    config.SYNC_SCHEDULE_ID,
    (at) => at.getTime() > secondAt && at.getUTCSeconds() === 60 - config.SYNC_LEAD_SECONDS,
  );
  await racing.result();
  save('sync-balances-racing-writers', racing);
  await second.stop();
}, 300_000);
