import type { Client } from '@temporalio/client';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PublishBalancesResult } from '../../src/activities/index.js';
import type { Config } from '../../src/config.js';
import { FENCE_KEY } from '../../src/keydb/fenced-write.js';
import { liveInstanceQueues } from '../../src/keydb/sync-instances.js';
import { spawnApp, waitUntilReady, type AppProcess } from '../support/app-process.js';
import { deleteQueues, keyChangedAt, temporalClient, testConfig, waitFor } from '../support/harness.js';
import { isolatedStores, type IsolatedStores } from '../support/isolated-stores.js';

const MINUTE = 60_000;

/** Resolves at a wall-clock instant: the moment itself is what this test is about. */
const at = (epochMs: number) =>
  new Promise((resolve) => setTimeout(resolve, Math.max(0, epochMs - Date.now())));

/** The pid of a worker running a publishBalances attempt of the SyncBalances run, and its attempt. */
async function publishingPid(client: Client, workflowId: string) {
  const { raw } = await client.workflow.getHandle(workflowId).describe();
  const activity = raw.pendingActivities?.find(
    (a) => a.activityType?.name === 'publishBalances' && a.lastWorkerIdentity,
  );
  const identity = activity?.lastWorkerIdentity;
  return identity ? { pid: Number(identity.split('@')[0]), attempt: activity.attempt ?? 0 } : undefined;
}

/** The pid of the worker whose publishBalances attempt KeyDB's fence names as the minute's writer. */
async function writerPid(client: Client, keydb: Redis, workflowId: string) {
  const [, activityId, attempt] = (await keydb.hget(FENCE_KEY, 'writer'))!.split('/');
  const { events } = await client.workflow.getHandle(workflowId).fetchHistory();
  const scheduled = events!.find(
    (e) => e.activityTaskScheduledEventAttributes?.activityId === activityId,
  )!.eventId!;
  const started = events!.find(
    (e) =>
      e.activityTaskStartedEventAttributes?.scheduledEventId?.toString() === scheduled.toString() &&
      e.activityTaskStartedEventAttributes.attempt === Number(attempt),
  );
  return Number(started!.activityTaskStartedEventAttributes!.identity!.split('@')[0]);
}

/** Two real processes (SYNC_LEAD_SECONDS=5); the one running a waiting writer is SIGKILLed before `:00`. */
describe('a worker crash inside the lead window', () => {
  let stores: IsolatedStores;
  let keydb: Redis;
  let config: Config;
  let client: Client;
  let apps: AppProcess[];

  beforeAll(async () => {
    stores = await isolatedStores('balance_sync_crash');
    ({ keydb } = stores);
    config = testConfig({ ...stores.overrides, SYNC_LEAD_SECONDS: '5' });
    client = await temporalClient();
    apps = await Promise.all([spawnApp(config), spawnApp(config)]);
    await Promise.all(apps.map((app) => waitUntilReady(app)));
  });

  afterAll(async () => {
    await Promise.all(apps.map((app) => app.kill('SIGKILL')));
    for (const id of [config.SYNC_SCHEDULE_ID, config.RECONCILE_SCHEDULE_ID]) {
      await client.schedule
        .getHandle(id)
        .delete()
        .catch(() => undefined);
    }
    await client.connection.close();
    await deleteQueues(config.INCOMING_QUEUE, config.DEAD_LETTER_QUEUE);
    await stores?.stop();
  });

  /**
   * Waits for the next minute whose tick is at least 2 s away, SIGKILLs the process running one of its
   * writers `beforeMs` before `:00`, and reports when KeyDB changed (polled) and what the run returned.
   */
  async function crashBeforeMinute(beforeMs: number) {
    const live = apps.filter((app) => app.child.exitCode === null && app.child.signalCode === null);
    await waitFor('both instances listed as live', async () =>
      (await liveInstanceQueues(keydb, config.TEMPORAL_SYNC_TASK_QUEUE)).length === live.length
        ? true
        : undefined,
    );
    const boundary = Math.ceil((Date.now() + 7_000) / MINUTE) * MINUTE;
    const tick = boundary - 5_000;
    // A scheduled run's id is the action's workflow id and its nominal time (RFC 3339, seconds).
    const workflowId = `${config.SYNC_SCHEDULE_ID}-${new Date(tick).toISOString().replace('.000', '')}`;
    const waiting = await waitFor(
      'the waiting publishBalances attempt',
      () => publishingPid(client, workflowId),
      MINUTE + 10_000,
    );
    const victim = live.find((app) => app.child.pid === waiting.pid);
    const survivor = live.find((app) => app !== victim);
    expect(victim).toBeDefined();
    expect(waiting.attempt).toBe(1);

    // Set after the previous minute's write, so only this minute's write can replace it.
    await keydb.set('1_Visa', 'sentinel');
    await at(boundary - beforeMs);
    await victim!.kill('SIGKILL');
    const changedAt = await keyChangedAt(keydb, '1_Visa', 'sentinel', boundary + 15_000, 2);
    const result: PublishBalancesResult = await client.workflow.getHandle(workflowId).result();
    const writtenAt = Number(await keydb.hget(FENCE_KEY, 'written_at'));
    console.info(
      `crash at -${beforeMs} ms -> wrote ${new Date(boundary).toISOString()} at ${changedAt - boundary} ms (polled), ${writtenAt - boundary} ms (fence), ${result.writeOffsetMs} ms (activity)`,
    );
    expect(changedAt).toBeGreaterThan(0);
    expect(await keydb.mget('1_Visa', '2_Mastercard')).toEqual(['1300', '1800']);
    expect(result.boundary).toBe(new Date(boundary).toISOString());
    // The minute was written by the surviving process, once, and recorded once.
    expect(await writerPid(client, keydb, workflowId)).toBe(survivor!.child.pid);
    const { rows: writes } = await stores.db.query(
      'SELECT workflow_id FROM balance_sync_publications WHERE boundary = $1',
      [new Date(boundary)],
    );
    expect(writes).toEqual([{ workflow_id: workflowId }]);
    return { boundary, changedAt, writtenAt, result, victim: victim! };
  }

  it('the other instance still writes within 1 s of the minute after a crash at :57.5', async () => {
    const { boundary, changedAt, result } = await crashBeforeMinute(2_500);
    expect(Math.abs(changedAt - boundary)).toBeLessThan(1_000);
    expect(result.writeOffsetMs).toBeLessThan(1_000);
  }, 150_000);

  it('the racing writer in the other instance writes within 200 ms of the minute after a crash at :59', async () => {
    // A fresh instance for the one killed above: two live instances again.
    const killed = apps.findIndex((app) => app.child.exitCode !== null || app.child.signalCode !== null);
    apps[killed] = await spawnApp(config);
    await waitUntilReady(apps[killed]);
    const { boundary, changedAt, writtenAt, result } = await crashBeforeMinute(1_000);
    expect(Math.abs(writtenAt - boundary)).toBeLessThan(200);
    expect(Math.abs(changedAt - boundary)).toBeLessThan(200);
    expect(Math.abs(result.writeOffsetMs!)).toBeLessThan(200);
    // Neither process took a writer that found the minute written for a failed retry.
    for (const app of apps)
      expect(app.lines.filter((line) => line.includes('retry not writing'))).toEqual([]);
  }, 150_000);
});
