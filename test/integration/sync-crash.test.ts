import type { Client } from '@temporalio/client';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PublishBalancesResult } from '../../src/activities/index.js';
import type { Config } from '../../src/config.js';
import { spawnApp, waitUntilReady, type AppProcess } from '../support/app-process.js';
import { deleteQueues, keyChangedAt, temporalClient, testConfig, waitFor } from '../support/harness.js';
import { isolatedStores, type IsolatedStores } from '../support/isolated-stores.js';

const MINUTE = 60_000;

/** Resolves at a wall-clock instant: the moment itself is what this test is about. */
const at = (epochMs: number) =>
  new Promise((resolve) => setTimeout(resolve, Math.max(0, epochMs - Date.now())));

/** The pid of the worker running (or that last ran) the SyncBalances run's publishBalances attempt. */
async function publishingPid(client: Client, workflowId: string) {
  const { raw } = await client.workflow.getHandle(workflowId).describe();
  const activity = raw.pendingActivities?.find((a) => a.activityType?.name === 'publishBalances');
  const identity = activity?.lastWorkerIdentity;
  return identity ? { pid: Number(identity.split('@')[0]), attempt: activity.attempt ?? 0 } : undefined;
}

/** Two real processes; the one whose worker waits for `:00` is SIGKILLed at `:57.5` (5 s lead). */
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

  it('the other instance takes the activity over and still writes within 1 s of the minute', async () => {
    // The first boundary whose tick (5 s before it) is still 2 s away.
    const boundary = Math.ceil((Date.now() + 7_000) / MINUTE) * MINUTE;
    const tick = boundary - 5_000;
    // A scheduled run's id is the action's workflow id and its nominal time (RFC 3339, seconds).
    const workflowId = `${config.SYNC_SCHEDULE_ID}-${new Date(tick).toISOString().replace('.000', '')}`;
    const waiting = await waitFor(
      'the waiting publishBalances attempt',
      () => publishingPid(client, workflowId),
      MINUTE + 10_000,
    );
    const victim = apps.find((app) => app.child.pid === waiting.pid);
    const survivor = apps.find((app) => app !== victim);
    expect(victim).toBeDefined();
    expect(waiting.attempt).toBe(1);

    // Set after the previous minute's write, so only this minute's write can replace it.
    await keydb.set('1_Visa', 'sentinel');
    await at(boundary - 2_500);
    await victim!.kill('SIGKILL');
    const changedAt = await keyChangedAt(keydb, '1_Visa', 'sentinel', boundary + 15_000);
    const observedOffsetMs = changedAt - boundary;
    const result: PublishBalancesResult = await client.workflow.getHandle(workflowId).result();
    console.info(
      `crash at :57.5 -> survivor wrote ${new Date(boundary).toISOString()} at ${observedOffsetMs} ms (polled), ${result.writeOffsetMs} ms (activity)`,
    );
    expect(changedAt).toBeGreaterThan(0);
    expect(Math.abs(observedOffsetMs)).toBeLessThan(1_000);
    expect(await keydb.mget('1_Visa', '2_Mastercard')).toEqual(['1300', '1800']);
    expect(result.boundary).toBe(new Date(boundary).toISOString());
    expect(result.writeOffsetMs).toBeLessThan(1_000);

    // The write came from a retry on the survivor, not from the killed process.
    const { events } = await client.workflow.getHandle(workflowId).fetchHistory();
    const started = events!
      .filter((e) => e.activityTaskStartedEventAttributes)
      .map((e) => e.activityTaskStartedEventAttributes!);
    expect(started.at(-1)?.attempt).toBeGreaterThan(1);
    expect(started.at(-1)?.identity).toBe(
      `${survivor!.child.pid}@${started.at(-1)!.identity!.split('@')[1]}`,
    );

    // One write for the minute although two instances run the sync worker: the run's, recorded once.
    const { rows: writes } = await stores.db.query(
      'SELECT workflow_id FROM balance_sync_publications WHERE boundary = $1',
      [new Date(boundary)],
    );
    expect(writes).toEqual([{ workflow_id: workflowId }]);
  }, 150_000);
});
