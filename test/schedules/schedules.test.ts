import { Client, Connection, type ScheduleHandle } from '@temporalio/client';
import { createHash, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createMetrics } from '../../src/metrics.js';
import {
  checkDefinition,
  definitionFingerprint,
  writeDefinition,
} from '../../src/schedules/definition-stamp.js';
import { createDefinitionKeeper } from '../../src/schedules/keep-definition.js';
import { scheduleDifferences } from '../../src/schedules/schedule-differences.js';
import {
  ensureSchedule,
  ensureSchedules,
  managedSchedules,
  reconcileBalancesSchedule,
  syncBalancesSchedule,
  type ScheduleSettings,
} from '../../src/schedules/schedules.js';
import pino from 'pino';
import { silentLog, waitFor } from '../support/harness.js';

const ENSURE = { pausedMeans: 'this test' };

/**
 * The schedules as the Temporal server reads them (the suite's dev server): when they fire, what a
 * run starts, and how ensureSchedule treats an existing schedule. No worker polls these task
 * queues, so a triggered run just waits and is terminated at the end.
 */
let client: Client;
const created: string[] = [];

beforeAll(async () => {
  client = new Client({
    connection: await Connection.connect({ address: inject('temporalAddress') }),
    namespace: inject('temporalNamespace'),
  });
});

afterAll(async () => {
  for (const id of created)
    await client.schedule
      .getHandle(id)
      .delete()
      .catch(() => undefined);
  await client.connection.close();
});

function settingsFor(syncLeadSeconds: number, reconcileCron = '17 * * * *'): ScheduleSettings {
  const id = randomUUID().slice(0, 8);
  created.push(`sync-${id}`, `reconcile-${id}`);
  return {
    taskQueue: `schedules-test-${id}`,
    syncScheduleId: `sync-${id}`,
    syncLeadSeconds,
    reconcileScheduleId: `reconcile-${id}`,
    reconcileCron,
  };
}

/** Creates (or finds) the sync schedule of these settings alone. */
const createSync = (settings: ScheduleSettings) =>
  ensureSchedule(client, settings.syncScheduleId, syncBalancesSchedule(settings), silentLog(), ENSURE);

const nextTimes = async (scheduleId: string) =>
  (await client.schedule.getHandle(scheduleId).describe()).info.nextActionTimes.map((t) => t.getTime());

/**
 * An operator's edit through the SDK (`handle.update`), which keeps the app's stamp: another cron,
 * a jitter, another task queue and overlap policy.
 */
const editAtRuntime = (scheduleId: string) =>
  client.schedule.getHandle(scheduleId).update((previous) => ({
    ...previous,
    spec: { cronExpressions: ['*/2 * * * *'], jitter: '7 seconds' },
    action: { ...previous.action, taskQueue: 'elsewhere' },
    policies: { ...previous.policies, overlap: 'ALLOW_ALL' },
  }));

/** Asserts the schedule fires every minute, `lead` s before the boundary. */
function expectEveryMinute(times: Date[], lead: number) {
  expect(times.length).toBeGreaterThanOrEqual(5);
  for (const t of times) expect((t.getTime() + lead * 1000) % 60_000).toBe(0);
  for (let i = 1; i < times.length; i++) expect(times[i]!.getTime() - times[i - 1]!.getTime()).toBe(60_000);
}

/** Triggers the schedule and returns the start event of the run it started. */
async function triggeredRun(scheduleId: string) {
  const handle = client.schedule.getHandle(scheduleId);
  await handle.trigger();
  const workflowId = await waitFor(
    'the triggered run',
    async () => (await handle.describe()).info.recentActions[0]?.action.workflow.workflowId,
  );
  const run = client.workflow.getHandle(workflowId);
  const description = await run.describe();
  const history = await run.fetchHistory();
  await run.terminate('schedules.test');
  const started = history.events![0]!.workflowExecutionStartedEventAttributes!;
  const args = (started.input?.payloads ?? []).map(
    (p) => JSON.parse(Buffer.from(p.data!).toString('utf8')) as unknown,
  );
  return { workflowId, description, started, args };
}

describe('the SyncBalances schedule', () => {
  it.each([0, 5, 30])('fires every minute, %i s before the boundary, in UTC', async (lead) => {
    const settings = settingsFor(lead);
    expect(await createSync(settings)).toBe('created');
    const times = await nextTimes(settings.syncScheduleId);
    expect(times.length).toBeGreaterThanOrEqual(5);
    for (const t of times) expect((t + lead * 1000) % 60_000).toBe(0);
    for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!).toBe(60_000);
  });

  it('starts SyncBalances with its lead on the task queue, and the run ends before the next tick', async () => {
    const settings = settingsFor(5);
    await createSync(settings);
    const { description, started, args, workflowId } = await triggeredRun(settings.syncScheduleId);
    expect(description.type).toBe('SyncBalances');
    expect(description.taskQueue).toBe(settings.taskQueue);
    expect(workflowId.startsWith(`${settings.syncScheduleId}-`)).toBe(true);
    expect(args).toEqual([{ leadMs: 5000 }]);
    // The run ends before the next tick, whatever the lead (derivation: test/unit/sync-timing.test.ts).
    const runTimeoutMs = Number(started.workflowRunTimeout!.seconds) * 1000;
    expect(runTimeoutMs).toBe(55_000);
  });

  it('skips a tick while a run is still open, catches up at most 10 s, and keeps running after failures', async () => {
    const settings = settingsFor(5);
    await createSync(settings);
    const { policies, spec, state } = await client.schedule.getHandle(settings.syncScheduleId).describe();
    expect(policies).toMatchObject({ overlap: 'SKIP', catchupWindow: 10_000, pauseOnFailure: false });
    expect(spec.jitter).toBe(0);
    expect(spec.timezone).toBe('UTC');
    expect(state.paused).toBe(false);
  });
});

describe('the ReconcileBalances schedule', () => {
  it('fires on its cron and starts ReconcileBalances without arguments', async () => {
    const settings = settingsFor(5, '17 * * * *');
    await ensureSchedule(
      client,
      settings.reconcileScheduleId,
      reconcileBalancesSchedule(settings),
      silentLog(),
      ENSURE,
    );
    const times = await nextTimes(settings.reconcileScheduleId);
    expect(times.length).toBeGreaterThanOrEqual(5);
    for (const t of times) expect(new Date(t).toISOString()).toMatch(/T\d\d:17:00\.000Z$/);
    for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!).toBe(3_600_000);
    const { description, args } = await triggeredRun(settings.reconcileScheduleId);
    expect(description.type).toBe('ReconcileBalances');
    expect(description.taskQueue).toBe(settings.taskQueue);
    expect(args).toEqual([]);
    const { policies } = await client.schedule.getHandle(settings.reconcileScheduleId).describe();
    expect(policies).toMatchObject({ overlap: 'BUFFER_ONE', catchupWindow: 600_000, pauseOnFailure: false });
  });
});

describe('ensureSchedule', () => {
  it('creates, then leaves an unchanged definition alone, then updates a changed one keeping its pause', async () => {
    const settings = settingsFor(5);
    const ensure = (lead: number) =>
      ensureSchedules(client, { ...settings, syncLeadSeconds: lead }, silentLog());
    expect(await ensure(5)).toEqual({ sync: 'created', reconcile: 'created' });
    expect(await ensure(5)).toEqual({ sync: 'unchanged', reconcile: 'unchanged' });
    await client.schedule.getHandle(settings.syncScheduleId).pause('maintenance');
    expect(await ensure(3)).toEqual({ sync: 'updated', reconcile: 'unchanged' });
    const description = await client.schedule.getHandle(settings.syncScheduleId).describe();
    expect(description.state).toMatchObject({ paused: true, note: 'maintenance' });
    for (const t of description.info.nextActionTimes) expect((t.getTime() + 3000) % 60_000).toBe(0);
    expect(await ensure(3)).toEqual({ sync: 'unchanged', reconcile: 'unchanged' });
  });

  it("refreshes the sync schedule's note while it runs, and leaves the reconcile schedule's note (an operator's) alone", async () => {
    const settings = settingsFor(5);
    await ensureSchedules(client, settings, silentLog());
    const reconcile = client.schedule.getHandle(settings.reconcileScheduleId);
    await reconcile.update((previous) => ({
      ...previous,
      state: { ...previous.state, note: 'watching drift' },
    }));
    const changed = { ...settings, syncLeadSeconds: 3, reconcileCron: '23 * * * *' };
    expect(await ensureSchedules(client, changed, silentLog())).toEqual({
      sync: 'updated',
      reconcile: 'updated',
    });
    const sync = await client.schedule.getHandle(settings.syncScheduleId).describe();
    expect(sync.state).toMatchObject({
      paused: false,
      note: expect.stringContaining('fires 3 s before each minute'),
    });
    expect((await reconcile.describe()).state).toMatchObject({ paused: false, note: 'watching drift' });
    // A running sync schedule whose note someone changed gets its lead note back at the next start-up.
    const handle = client.schedule.getHandle(settings.syncScheduleId);
    await handle.update((previous) => ({ ...previous, state: { ...previous.state, note: 'edited' } }));
    const lines: { msg: string; changes?: string[] }[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    expect(await ensureSchedules(client, changed, log)).toEqual({
      sync: 'updated',
      reconcile: 'unchanged',
    });
    expect((await handle.describe()).state.note).toContain('fires 3 s before each minute');
    // Said as what it is: the note, not an empty list of definition changes.
    expect(lines.find((line) => line.msg.startsWith('schedule '))).toMatchObject({
      msg: 'schedule note restored',
      changes: [expect.stringMatching(/^state\.note "edited" → ".*fires 3 s before each minute/)],
    });
  });

  it('warns at start-up about each paused schedule, saying what the pause stops', async () => {
    const settings = settingsFor(5);
    await ensureSchedules(client, settings, silentLog());
    await client.schedule.getHandle(settings.syncScheduleId).pause('deploy');
    await client.schedule.getHandle(settings.reconcileScheduleId).pause();
    const lines: { level: number; msg: string; scheduleId?: string; note?: string }[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    expect(await ensureSchedules(client, settings, log)).toEqual({
      sync: 'unchanged',
      reconcile: 'unchanged',
    });
    expect(lines.filter((line) => line.level === 40)).toEqual([
      expect.objectContaining({
        scheduleId: settings.syncScheduleId,
        note: 'deploy',
        msg: `schedule ${settings.syncScheduleId} is paused: balances are not published to KeyDB until it is unpaused`,
      }),
      expect.objectContaining({
        scheduleId: settings.reconcileScheduleId,
        msg: `schedule ${settings.reconcileScheduleId} is paused: balance sums are not reconciled on schedule until it is unpaused`,
      }),
    ]);
  });

  it('is safe to race: one creates, the other finds it unchanged (or stamps it again), and it ends as defined', async () => {
    const settings = settingsFor(5);
    const definition = syncBalancesSchedule(settings);
    const results = await Promise.all([
      ensureSchedule(client, settings.syncScheduleId, definition, silentLog(), ENSURE),
      ensureSchedule(client, settings.syncScheduleId, definition, silentLog(), ENSURE),
    ]);
    // The second finds it unchanged, or, between the create and its stamp, writes the same definition.
    expect(results.sort()).toEqual(['created', expect.stringMatching(/^(unchanged|updated)$/)]);
    const described = await client.schedule.getHandle(settings.syncScheduleId).describe();
    expect(checkDefinition(described, definition)).toEqual({ kind: 'same' });
  });

  it('at start-up, restores an edit made at runtime that kept the stamp (an SDK update)', async () => {
    const settings = settingsFor(5);
    await ensureSchedules(client, settings, silentLog());
    await editAtRuntime(settings.syncScheduleId);
    expect(await ensureSchedules(client, settings, silentLog())).toEqual({
      sync: 'updated',
      reconcile: 'unchanged',
    });
    const described = await client.schedule.getHandle(settings.syncScheduleId).describe();
    expect(checkDefinition(described, syncBalancesSchedule(settings))).toEqual({ kind: 'same' });
  });

  it('passes on errors other than "already exists"', async () => {
    const settings = settingsFor(5);
    await expect(
      ensureSchedule(
        client,
        settings.syncScheduleId,
        syncBalancesSchedule({ ...settings, taskQueue: '' }),
        silentLog(),
        ENSURE,
      ),
    ).rejects.toThrow('Missing ScheduleOptions.action.taskQueue'); // the create's own error
  });
});

describe('what an operator sees of a schedule', () => {
  it.each([
    [0, 'balances at the minute this run starts', 'at every minute boundary'],
    [5, 'balances at the minute boundary 5 s after this run starts', '5 s before every minute boundary'],
  ])(
    'lead %i s: the run summary, the calendar comment and the note say which minute a run publishes',
    async (lead, summary, comment) => {
      const settings = settingsFor(lead);
      await ensureSchedules(client, settings, silentLog());
      const sync = await client.schedule.getHandle(settings.syncScheduleId).describe();
      expect(sync.action).toMatchObject({ staticSummary: summary });
      expect(sync.spec.calendars?.[0]?.comment).toContain(comment);
      expect(sync.state.note).toContain(`fires ${lead} s before each minute (SYNC_LEAD_SECONDS)`);
      const reconcile = await client.schedule.getHandle(settings.reconcileScheduleId).describe();
      expect(reconcile.action).toMatchObject({
        staticSummary: 'reconciles the running balance sums with the full aggregate',
      });
    },
  );
});

describe('a schedule edited at runtime', () => {
  it.each([0, 5])(
    'lead %i s: is found changed, and written back to its definition (every minute, that lead early), its pause and note kept',
    async (lead) => {
      const settings = settingsFor(lead);
      const definition = syncBalancesSchedule(settings);
      await createSync(settings);
      const handle = client.schedule.getHandle(settings.syncScheduleId);
      expect(checkDefinition(await handle.describe(), definition)).toEqual({ kind: 'same' });
      await handle.pause('maintenance');
      await editAtRuntime(settings.syncScheduleId);
      const edited = await handle.describe();
      expect(checkDefinition(edited, definition)).toEqual({ kind: 'changed' });

      const restored = await writeDefinition(handle, definition);
      expect(checkDefinition(restored, definition)).toEqual({ kind: 'same' });
      expect(restored.state).toMatchObject({ paused: true, note: 'maintenance' });
      expectEveryMinute(restored.info.nextActionTimes, lead);
      expect(restored.spec.calendars).toHaveLength(1);
      expect(restored).toMatchObject({
        spec: { jitter: 0, timezone: 'UTC' },
        action: {
          taskQueue: settings.taskQueue,
          workflowType: 'SyncBalances',
          args: [{ leadMs: lead * 1000 }],
        },
        policies: { overlap: 'SKIP' },
      });
      expect(scheduleDifferences(edited, restored)).toEqual(
        expect.arrayContaining([
          ...(lead === 0 ? [] : [`spec.calendars[0].second 0 → ${60 - lead}`]),
          'spec.calendars[0].minute 0-59/2 → 0-59',
          'spec.jitter 7000 → 0',
          `action.taskQueue "elsewhere" → "${settings.taskQueue}"`,
          'policies.overlap "ALLOW_ALL" → "SKIP"',
        ]),
      );
    },
  );

  it('is found changed when replaced without the stamp (as `temporal schedule update` does), and written back', async () => {
    const settings = settingsFor(5);
    const definition = reconcileBalancesSchedule(settings);
    await ensureSchedule(client, settings.reconcileScheduleId, definition, silentLog(), ENSURE);
    const handle = client.schedule.getHandle(settings.reconcileScheduleId);
    await handle.update((previous) => ({
      ...previous,
      spec: { cronExpressions: ['17 * * * *'] },
      action: { ...previous.action, staticDetails: undefined, staticSummary: undefined },
    }));
    expect(checkDefinition(await handle.describe(), definition)).toEqual({ kind: 'changed' });
    const restored = await writeDefinition(handle, definition);
    expect(checkDefinition(restored, definition)).toEqual({ kind: 'same' });
    expect(restored.spec.timezone).toBe('UTC');
  });

  it('is not changed by a pause, a trigger or a note', async () => {
    const settings = settingsFor(5);
    await createSync(settings);
    const handle = client.schedule.getHandle(settings.syncScheduleId);
    await handle.pause('maintenance');
    await handle.trigger();
    await handle.update((previous) => ({
      ...previous,
      state: { ...previous.state, note: 'still maintenance' },
    }));
    expect(checkDefinition(await handle.describe(), syncBalancesSchedule(settings))).toEqual({
      kind: 'same',
    });
    await client.workflow
      .getHandle(
        await waitFor(
          'the triggered run',
          async () => (await handle.describe()).info.recentActions[0]?.action.workflow.workflowId,
        ),
      )
      .terminate('schedules.test');
  });

  it('instances never fight: other settings leave it (a warning once, a gauge); the same settings restore it together', async () => {
    const settings = settingsFor(5);
    const ours = managedSchedules(settings).sync;
    const theirs = managedSchedules({ ...settings, syncLeadSeconds: 3 }).sync;
    await createSync(settings);
    const handle = client.schedule.getHandle(settings.syncScheduleId);
    const lines: { level: number; msg: string }[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const otherMetrics = createMetrics();
    const otherInstance = createDefinitionKeeper(otherMetrics, log);
    for (let look = 0; look < 3; look++) {
      expect(await otherInstance(theirs, handle, await handle.describe())).toEqual({ otherSettings: true });
    }
    expect(checkDefinition(await handle.describe(), ours.definition)).toEqual({ kind: 'same' });
    expect((await otherMetrics.syncScheduleOtherSettings.get()).values).toEqual([
      expect.objectContaining({ labels: { schedule: 'sync' }, value: 1 }),
    ]);
    expect(lines.filter((line) => line.level === 40).map((line) => line.msg)).toEqual([
      `schedule ${settings.syncScheduleId} was written by an instance with other settings or another release: leaving it as it is`,
    ]);

    await editAtRuntime(settings.syncScheduleId);
    const edited = await handle.describe();
    const [first, second] = [
      createDefinitionKeeper(createMetrics(), silentLog()),
      createDefinitionKeeper(createMetrics(), silentLog()),
    ];
    const kept = await Promise.all([first(ours, handle, edited), second(ours, handle, edited)]);
    for (const each of kept) expect(each.restored).toContain('spec.jitter 7000 → 0');
    const after = await handle.describe();
    expect(checkDefinition(after, ours.definition)).toEqual({ kind: 'same' });
    expectEveryMinute(after.info.nextActionTimes, 5);
    expect(await first(ours, handle, after)).toEqual({});
  });
});

/** Replaces the schedule's stamp, as another release (or a half-finished write) would have left it. */
const setStamp = (handle: ScheduleHandle, definitionPart: string, storedPart: string) =>
  handle.update((previous) => ({
    ...previous,
    action: {
      ...previous.action,
      staticDetails: `balance-sync schedule definition ${definitionPart} stored as ${storedPart}`,
    },
  }));

/** A counter's value for the sync schedule. */
const syncCount = async (counter: { get(): Promise<{ values: { labels: object; value: number }[] }> }) =>
  (await counter.get()).values.find((v) => (v.labels as { schedule?: string }).schedule === 'sync')?.value;

describe('a stamp the watch did not write', () => {
  it.each([
    // The stamp of a release before the format: the definition's JSON alone.
    ['a release before the stamp format', (d: object) => hash16(JSON.stringify(d))],
    [
      'another @temporalio/client version',
      (d: object) => definitionFingerprint(d as never, 'format 2, @temporalio/client 0.0.1'),
    ],
  ])(
    'from %s, with the same definition: is left alone by the watch, and written over at start-up',
    async (_, theirs) => {
      const settings = settingsFor(5);
      const ours = managedSchedules(settings).sync;
      await createSync(settings);
      const handle = client.schedule.getHandle(settings.syncScheduleId);
      await setStamp(handle, theirs(ours.definition), '0123456789abcdef');
      const before = await handle.describe();
      expect(checkDefinition(before, ours.definition)).toMatchObject({ kind: 'other-settings' });
      const metrics = createMetrics();
      const keep = createDefinitionKeeper(metrics, silentLog());
      for (let look = 0; look < 2; look++)
        expect(await keep(ours, handle, await handle.describe())).toEqual({ otherSettings: true });
      expect((await handle.describe()).info.lastUpdatedAt).toEqual(before.info.lastUpdatedAt);
      expect(await syncCount(metrics.syncScheduleRestored)).toBe(0);

      expect(await createSync(settings)).toBe('updated');
      expect(checkDefinition(await handle.describe(), ours.definition)).toEqual({ kind: 'same' });
    },
  );

  it('with our definition and a stored fingerprint that differs, nothing visible: a restore of fields the SDK does not show', async () => {
    const settings = settingsFor(5);
    const ours = managedSchedules(settings).sync;
    await createSync(settings);
    const handle = client.schedule.getHandle(settings.syncScheduleId);
    await setStamp(handle, definitionFingerprint(ours.definition), '0123456789abcdef');
    const lines: { level: number; msg: string; changes?: string[] }[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const metrics = createMetrics();
    const keep = createDefinitionKeeper(metrics, log);
    expect(await keep(ours, handle, await handle.describe())).toEqual({
      restored: ['(fields the SDK does not show)'],
    });
    expect(await syncCount(metrics.syncScheduleRestored)).toBe(1);
    expect(await syncCount(metrics.syncScheduleStampRenewed)).toBe(0);
    expect(lines.filter((line) => line.level === 40)).toMatchObject([
      { changes: ['(fields the SDK does not show)'] },
    ]);
    expect(await keep(ours, handle, await handle.describe())).toEqual({});
  });

  it('pending (a create whose stamp failed): start-up still says created, and the watch renews the stamp, counted', async () => {
    const settings = settingsFor(5);
    const ours = managedSchedules(settings).sync;
    const lines: { level: number; msg: string }[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    // The create goes through; every describe after it fails, as a dropped connection would.
    const failingStamp = {
      schedule: {
        create: (options: Parameters<Client['schedule']['create']>[0]) => client.schedule.create(options),
        getHandle: (id: string) => ({
          scheduleId: id,
          describe: () => Promise.reject(new Error('connection dropped')),
        }),
      },
    } as unknown as Client;
    expect(await ensureSchedule(failingStamp, ours.scheduleId, ours.definition, log, ours.options)).toBe(
      'created',
    );
    expect(lines.filter((line) => line.level === 40).map((line) => line.msg)).toEqual([
      `schedule ${ours.scheduleId} created; its definition stamp is pending (the sync watch completes it)`,
    ]);
    const handle = client.schedule.getHandle(ours.scheduleId);
    const metrics = createMetrics();
    const keep = createDefinitionKeeper(metrics, silentLog());
    expect(await keep(ours, handle, await handle.describe())).toEqual({});
    expect(await syncCount(metrics.syncScheduleStampRenewed)).toBe(1);
    expect(await syncCount(metrics.syncScheduleRestored)).toBe(0);
    expect(checkDefinition(await handle.describe(), ours.definition)).toEqual({ kind: 'same' });
    expect(await keep(ours, handle, await handle.describe())).toEqual({});
    expect(await syncCount(metrics.syncScheduleStampRenewed)).toBe(1);
  });
});

function hash16(text: string) {
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}
