import type { Info } from '@temporalio/activity';
import { MockActivityEnvironment } from '@temporalio/testing';
import { Redis } from 'ioredis';
import type pg from 'pg';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { createPruneBalanceHistory } from '../../src/activities/prune-balance-history.js';
import {
  createPublishBalances,
  type PublishBalancesInput,
  type PublishBalancesResult,
} from '../../src/activities/publish-balances.js';
import { recordPublication } from '../../src/activities/record-publication.js';
import { createReconcileBalances } from '../../src/activities/reconcile-balances.js';
import {
  balancesAt,
  HistoryGapError,
  keyChanges,
  NoPublicationError,
  unpublishedMinutes,
} from '../../src/history/balance-history.js';
import { createMetrics, type AppMetrics } from '../../src/metrics.js';
import { migrate } from '../../src/postgres/schema.js';
import { activityLogger } from '../support/activity-logger.js';
import { KEYDB_URL, keydbBalances, resetDatabase, rows } from '../support/harness.js';
import { createScratchDatabase, type ScratchDatabase } from '../support/scratch-database.js';

/**
 * The balance history as publishBalances records it and as `npm run balances` and GET /balances read
 * it: real Postgres (own database) and Redis, the activity through MockActivityEnvironment with the
 * worker's clock pinned (Date only) to the minute each step stands for. The history's instants are
 * KeyDB's TIME when it applied each write (the real time), returned as keydbWrittenAt.
 */
let scratch: ScratchDatabase;
let db: pg.Pool;
let keydb: Redis;
let metrics: AppMetrics;
const logger = activityLogger();
const attempt = (info: Partial<Info> = {}) =>
  new MockActivityEnvironment({ startToCloseTimeoutMs: 0, scheduleToCloseTimeoutMs: 0, ...info }, { logger });

beforeAll(async () => {
  scratch = await createScratchDatabase('balance_sync_history');
  db = scratch.pool;
  keydb = new Redis(KEYDB_URL);
});

afterAll(async () => {
  keydb?.disconnect();
  await scratch?.drop();
});

beforeEach(async () => {
  await resetDatabase(db);
  await migrate(db);
  await keydb.flushdb();
  metrics = createMetrics();
});

afterEach(() => {
  vi.useRealTimers();
});

const M1 = Date.parse('2030-01-01T10:01:00Z');
const MINUTE = 60_000;
const iso = (ms: number) => new Date(ms).toISOString();
/** The scheduled run of the minute `boundary` (5 s lead), written `offsetMs` after it. */
const publishMinute = async (
  boundary: number,
  offsetMs = 12,
  info: Partial<Info> = {},
): Promise<PublishBalancesResult> => {
  vi.useFakeTimers({ toFake: ['Date'], now: boundary + offsetMs });
  const input: PublishBalancesInput = { nominalTime: iso(boundary - 5_000), leadMs: 5_000 };
  // Each minute its own run, so each attempt its own writer, as in the sync.
  const run = { workflowId: `sync-balances-${input.nominalTime}`, runId: `run-${boundary}` };
  return await attempt({ workflowExecution: run, ...info }).run(
    createPublishBalances(db, keydb, metrics),
    input,
  );
};
const publishNow = async (at: number): Promise<PublishBalancesResult> => {
  vi.useFakeTimers({ toFake: ['Date'], now: at });
  const run = { workflowId: `trigger-${at}`, runId: `run-now-${at}` };
  return await attempt({ workflowExecution: run }).run(createPublishBalances(db, keydb, metrics), {
    nominalTime: iso(at),
    leadMs: null,
  });
};
/** The instant KeyDB applied a publishBalances write (its TIME), in ms. */
const appliedAt = (result: PublishBalancesResult) => Date.parse(result.keydbWrittenAt ?? 'not written');
/** Publishes the minute and returns when KeyDB applied it. */
const publishAt = async (boundary: number, offsetMs = 12, info: Partial<Info> = {}) =>
  appliedAt(await publishMinute(boundary, offsetMs, info));
/** Every balance key KeyDB holds now, with its value (the sync's fence, `balance-sync:*`, aside). */
const keydbNow = async () => (await keydbBalances(keydb)) as Record<string, string>;
const spend = (providerId: number, value: string) =>
  db.query('INSERT INTO historical_transactions (provider_id, transaction_value) VALUES ($1, $2)', [
    providerId,
    value,
  ]);
/** KeyDB's clock now (TIME). */
const keydbTime = async () => {
  const [seconds, micros] = await keydb.time();
  return new Date(Number(seconds) * 1000 + Math.floor(Number(micros) / 1000));
};
const count = async (table: string) => Number((await rows(db, `SELECT count(*) AS n FROM ${table}`))[0]?.n);

describe('balance history', () => {
  it('answers, for each of three minutes with traffic between them, what KeyDB held from its write to the next', async () => {
    const held: Record<string, string>[] = [];
    const applied: number[] = [];
    await spend(1, '600');
    applied.push(await publishAt(M1));
    held.push(await keydbNow());
    await spend(1, '-0.25');
    await db.query(`INSERT INTO initial_data (provider_name, initial_value) VALUES ('Amex', 5)`);
    applied.push(await publishAt(M1 + MINUTE, 40));
    held.push(await keydbNow());
    await spend(2, '12.5');
    await db.query('DELETE FROM initial_data WHERE id = 3');
    applied.push(await publishAt(M1 + 2 * MINUTE, 7));
    held.push(await keydbNow());
    expect(held).toEqual([
      { '1_Visa': '1900', '2_Mastercard': '1800' },
      { '1_Visa': '1899.75', '2_Mastercard': '1800', '3_Amex': '5' },
      { '1_Visa': '1899.75', '2_Mastercard': '1812.5' },
    ]);
    for (const [i, balances] of held.entries()) {
      const answer = { minute: iso(M1 + i * MINUTE), publishedAt: iso(applied[i]!), balances };
      expect(await balancesAt(db, new Date(applied[i]!))).toEqual(answer);
      expect(await balancesAt(db, new Date((applied[i + 1] ?? applied[i]! + MINUTE) - 1))).toEqual(answer);
      expect(await balancesAt(db, new Date(applied[i]!), '1_Visa')).toEqual({
        ...answer,
        balances: { '1_Visa': balances['1_Visa'] },
      });
    }
    // Only what changed is stored: 2 keys, then 1_Visa and 3_Amex, then 2_Mastercard and 3_Amex removed.
    const stored = await rows(
      db,
      'SELECT key, value FROM balance_sync_balance_changes ORDER BY instant, key',
    );
    expect(stored).toEqual([
      { key: '1_Visa', value: '1900' },
      { key: '2_Mastercard', value: '1800' },
      { key: '1_Visa', value: '1899.75' },
      { key: '3_Amex', value: '5' },
      { key: '2_Mastercard', value: '1812.5' },
      { key: '3_Amex', value: null },
    ]);
    expect(
      await rows(db, 'SELECT minute, write_offset_ms, workflow_id, run_id FROM balance_sync_publications'),
    ).toHaveLength(3);
  });

  it("records the minute at KeyDB's TIME when it applied the write, its offset, the workflow run and the writer", async () => {
    const before = (await keydbTime()).getTime();
    const result = await publishMinute(M1, 25, {
      attempt: 2,
      activityId: 'publish',
      workflowExecution: { workflowId: 'sync-balances-2030-01-01T10:00:55Z', runId: 'run-1' },
    });
    const applied = appliedAt(result);
    // KeyDB's clock (today), not the worker's (pinned to 2030).
    expect(applied).toBeGreaterThanOrEqual(before);
    expect(applied).toBeLessThanOrEqual((await keydbTime()).getTime());
    expect(await rows(db, 'SELECT * FROM balance_sync_publications')).toEqual([
      expect.objectContaining({
        instant: new Date(applied),
        minute: new Date(M1),
        boundary: new Date(M1),
        written_at: new Date(applied),
        write_offset_ms: 25,
        workflow_id: 'sync-balances-2030-01-01T10:00:55Z',
        run_id: 'run-1',
        attempt: 2,
        writer: 'run-1/publish/2',
      }),
    ]);
    expect(await count('balance_sync_unconfirmed_writes')).toBe(0);
  });

  it('shows an applied write whose recording failed as a gap, from before it was sent to the next write after its deadline', async () => {
    const first = await publishAt(M1);
    await spend(1, '1');
    await db.query('ALTER TABLE balance_sync_balance_changes RENAME TO balance_sync_balance_changes_away');
    const lost = await publishMinute(M1 + MINUTE);
    await db.query('ALTER TABLE balance_sync_balance_changes_away RENAME TO balance_sync_balance_changes');
    expect(lost).toMatchObject({ boundaryRecorded: false, historyRecorded: false });
    expect(await count('balance_sync_sync_state')).toBe(1);
    expect(await count('balance_sync_publications')).toBe(1);
    // KeyDB holds 1301 from `lost` on; the history does not know it, so it answers nothing there.
    expect(await keydbNow()).toMatchObject({ '1_Visa': '1301' });
    expect(await balancesAt(db, new Date(first))).toMatchObject({ balances: { '1_Visa': '1300' } });
    for (const at of [appliedAt(lost), appliedAt(lost) + 30_000]) {
      await expect(balancesAt(db, new Date(at))).rejects.toThrow(HistoryGapError);
      await expect(balancesAt(db, new Date(at), '1_Visa')).rejects.toThrow(HistoryGapError);
    }
    const next = await publishAt(M1 + 2 * MINUTE);
    await expect(balancesAt(db, new Date(next - 1))).rejects.toMatchObject({ to: iso(next) });
    expect(await balancesAt(db, new Date(next))).toMatchObject({
      minute: iso(M1 + 2 * MINUTE),
      balances: { '1_Visa': '1301' },
    });
  });

  it('records a retried minute once and leaves no gap for the retry, which wrote nothing', async () => {
    const first = await publishAt(M1);
    await spend(1, '1');
    // The retry finds its minute published: it writes and records nothing, and forgets its note.
    expect(await publishMinute(M1, 900, { attempt: 2 })).toMatchObject({ alreadyPublished: true });
    expect(await count('balance_sync_publications')).toBe(1);
    expect(await count('balance_sync_unconfirmed_writes')).toBe(0);
    // A minute written twice (KeyDB lost its fence: FLUSHDB, a restart without persistence) is
    // recorded when the second write happened, with no minute; the minute keeps its values.
    await keydb.flushdb();
    const again = await publishMinute(M1, 2_000, { attempt: 3 });
    expect(again).toMatchObject({ historyRecorded: true });
    expect(await balancesAt(db, new Date(appliedAt(again) - 1))).toEqual({
      minute: iso(M1),
      publishedAt: iso(first),
      balances: { '1_Visa': '1300', '2_Mastercard': '1800' },
    });
    expect(await balancesAt(db, new Date(appliedAt(again)))).toEqual({
      minute: null,
      publishedAt: iso(appliedAt(again)),
      balances: { '1_Visa': '1301', '2_Mastercard': '1800' },
    });
    expect(await count('balance_sync_publications')).toBe(2);
  });

  it('records nothing and leaves no gap for a hedged writer whose write came back already', async () => {
    const run = { workflowId: 'sync', runId: 'run-1' };
    const winner = await publishMinute(M1, 12, { activityId: 'a', workflowExecution: run });
    // The other writer of the same minute, after the winner: KeyDB says `already`.
    const other = await publishMinute(M1, 15, { activityId: 'b', workflowExecution: run });
    expect(other).toMatchObject({ alreadyPublished: true, historyRecorded: false });
    expect(await rows(db, 'SELECT writer FROM balance_sync_publications')).toEqual([{ writer: 'run-1/a/1' }]);
    expect(await count('balance_sync_unconfirmed_writes')).toBe(0);
    expect(await balancesAt(db, new Date(appliedAt(winner) + 1))).toMatchObject({ minute: iso(M1) });
    // A writer that died after noting its write: the next minute's recording proves its minute was
    // someone else's (the fence lets one writer through), and its note goes.
    await db.query(
      `INSERT INTO balance_sync_unconfirmed_writes (writer, minute, may_apply_from, may_apply_until)
       VALUES ('run-1/c/1', $1, $2, $3)`,
      [new Date(M1), new Date(appliedAt(winner) + 1), new Date(appliedAt(winner) + 1_000)],
    );
    await expect(balancesAt(db, new Date(appliedAt(winner) + 1))).rejects.toThrow(HistoryGapError);
    await publishMinute(M1 + MINUTE);
    expect(await count('balance_sync_unconfirmed_writes')).toBe(0);
    expect(await balancesAt(db, new Date(appliedAt(winner) + 1))).toMatchObject({ minute: iso(M1) });
  });

  it('keeps a write whose recording a later one overtook as a gap, never at a later instant', async () => {
    const first = await publishAt(M1);
    const second = await publishAt(M1 + MINUTE);
    // A write applied between the two, recorded only now (its worker stalled after the write).
    const between = first + Math.max(1, Math.floor((second - first) / 2));
    await db.query(
      `INSERT INTO balance_sync_unconfirmed_writes (writer, minute, may_apply_from, may_apply_until)
       VALUES ('late', NULL, $1, $2)`,
      [new Date(between - 1), new Date(between + 1)],
    );
    const recorded = await recordPublication(db, {
      boundary: null,
      writtenAt: new Date(between),
      writeOffsetMs: null,
      workflowId: 'w',
      runId: 'r',
      attempt: 1,
      writer: 'late',
      written: [{ key: '1_Visa', balance: '7' }],
      removed: [],
    });
    expect(recorded).toBe(false);
    expect(await count('balance_sync_publications')).toBe(2);
    expect(await count('balance_sync_unconfirmed_writes')).toBe(1);
    expect(await balancesAt(db, new Date(between - 2))).toMatchObject({ minute: iso(M1) });
    await expect(balancesAt(db, new Date(between))).rejects.toThrow(HistoryGapError);
    expect(await balancesAt(db, new Date(second))).toMatchObject({ minute: iso(M1 + MINUTE) });
  });

  it('shows a minute that was not published as a gap: the answer carries the minute before it', async () => {
    await publishMinute(M1);
    await spend(1, '5');
    const third = await publishAt(M1 + 2 * MINUTE);
    const paused = await balancesAt(db, new Date(third - 1));
    expect(paused).toMatchObject({ minute: iso(M1), balances: { '1_Visa': '1300' } });
    expect(await balancesAt(db, new Date(third))).toMatchObject({ minute: iso(M1 + 2 * MINUTE) });
    expect(await unpublishedMinutes(db, new Date(M1 - MINUTE + 1), new Date(M1 + 3 * MINUTE))).toEqual([
      { from: iso(M1 + MINUTE), to: iso(M1 + MINUTE) },
      { from: iso(M1 + 3 * MINUTE), to: iso(M1 + 3 * MINUTE) },
    ]);
  });

  it('records an on-demand write at the time KeyDB applied it, with no minute', async () => {
    await publishMinute(M1);
    await spend(2, '-800');
    const onDemand = appliedAt(await publishNow(M1 + 20_000));
    expect(await balancesAt(db, new Date(onDemand - 1))).toMatchObject({ minute: iso(M1) });
    expect(await balancesAt(db, new Date(onDemand))).toEqual({
      minute: null,
      publishedAt: iso(onDemand),
      balances: { '1_Visa': '1300', '2_Mastercard': '1000' },
    });
    const next = await publishAt(M1 + MINUTE);
    expect(await balancesAt(db, new Date(next))).toMatchObject({ minute: iso(M1 + MINUTE) });
  });

  it('refuses a time before the first recorded publication, naming the oldest', async () => {
    await expect(balancesAt(db, new Date(M1))).rejects.toThrow(
      new NoPublicationError('no publication recorded yet'),
    );
    const first = await publishAt(M1);
    await expect(balancesAt(db, new Date(first - 1))).rejects.toThrow(
      new NoPublicationError(
        `no publication recorded at or before ${iso(first - 1)}; the oldest kept is ${iso(first)}`,
      ),
    );
  });

  it('lists every change of a key from one time to another, both included, removals as null', async () => {
    await db.query(`INSERT INTO initial_data (provider_name, initial_value) VALUES ('Amex', 5)`);
    const applied = [await publishAt(M1)];
    await spend(3, '1');
    applied.push(await publishAt(M1 + MINUTE));
    applied.push(await publishAt(M1 + 2 * MINUTE)); // no change of 3_Amex
    await db.query(
      'DELETE FROM historical_transactions WHERE provider_id = 3; DELETE FROM initial_data WHERE id = 3',
    );
    applied.push(await publishAt(M1 + 3 * MINUTE));
    const change = (m: number, value: string | null) => ({
      minute: iso(M1 + m * MINUTE),
      publishedAt: iso(applied[m]!),
      value,
    });
    expect(await keyChanges(db, '3_Amex', new Date(applied[0]!), new Date(applied[3]!))).toEqual([
      change(0, '5'),
      change(1, '6'),
      change(3, null),
    ]);
    expect(await keyChanges(db, '3_Amex', new Date(applied[0]! + 1), new Date(applied[3]! - 1))).toEqual([
      change(1, '6'),
    ]);
    expect(await keyChanges(db, '9_Nobody', new Date(applied[0]!), new Date(applied[3]!))).toEqual([]);
  });

  it('writes a checkpoint of every live key at the first publication, then when the changes since reach the key count', async () => {
    await db.query(`INSERT INTO initial_data (provider_name, initial_value) VALUES ('Amex', 5)`);
    const first = await publishAt(M1); // 3 changes, 3 live keys: a checkpoint
    await spend(1, '1');
    await publishMinute(M1 + MINUTE); // 1 change since: none
    await spend(2, '1');
    await publishMinute(M1 + 2 * MINUTE); // 2 since: none
    await publishMinute(M1 + 3 * MINUTE); // nothing changed: none
    await db.query('DELETE FROM initial_data WHERE id = 3');
    await spend(1, '1');
    const fifth = await publishAt(M1 + 4 * MINUTE); // 4 since (one a removal), 2 live keys: a checkpoint
    expect(
      await rows(db, 'SELECT instant, balances FROM balance_sync_balance_checkpoints ORDER BY instant'),
    ).toEqual([
      { instant: new Date(first), balances: { '1_Visa': '1300', '2_Mastercard': '1800', '3_Amex': '5' } },
      { instant: new Date(fifth), balances: { '1_Visa': '1302', '2_Mastercard': '1801' } },
    ]);
  });

  it('answers from a checkpoint and the changes after it exactly what KeyDB held, as the per-key answer does', async () => {
    // 40 minutes of deterministic traffic over up to 6 providers: spends, new providers, removals.
    let seed = 7;
    const next = (n: number) => (seed = (seed * 48_271) % 2_147_483_647) % n;
    const held: Record<string, string>[] = [];
    const applied: number[] = [];
    for (let m = 0; m < 40; m++) {
      for (let i = next(3); i > 0; i--) await spend(1 + next(2), `${next(200) - 100}.${next(100)}`);
      if (next(5) === 0)
        await db.query(`INSERT INTO initial_data (provider_name, initial_value) VALUES ('P${m}', ${m})`);
      if (next(7) === 0)
        await db.query('DELETE FROM initial_data WHERE id = (SELECT max(id) FROM initial_data WHERE id > 2)');
      applied.push(await publishAt(M1 + m * MINUTE));
      held.push(await keydbNow());
    }
    expect(await count('balance_sync_balance_checkpoints')).toBeGreaterThan(3);
    const answers = () => Promise.all(applied.map((at) => balancesAt(db, new Date(at))));
    const fromCheckpoints = await answers();
    expect(fromCheckpoints.map((answer) => answer.balances)).toEqual(held);
    // History recorded before checkpoints existed is answered key by key: the same answers.
    await db.query('DELETE FROM balance_sync_balance_checkpoints');
    expect(await answers()).toEqual(fromCheckpoints);
  });

  it("shows reconciliation's correction as the next published minute's value", async () => {
    await publishMinute(M1);
    // A sum that bypassed the triggers: published as is, until reconciliation corrects it.
    await db.query('UPDATE balance_sync_provider_sums SET tx_sum = tx_sum + 7 WHERE provider_id = 1');
    const second = await publishAt(M1 + MINUTE);
    await new MockActivityEnvironment(undefined, { logger }).run(createReconcileBalances(db, metrics));
    const third = await publishAt(M1 + 2 * MINUTE);
    const visa = (at: number) => balancesAt(db, new Date(at), '1_Visa');
    expect((await visa(second)).balances).toEqual({ '1_Visa': '1307' });
    expect((await visa(third)).balances).toEqual({ '1_Visa': '1300' });
    expect(await keyChanges(db, '1_Visa', new Date(0), new Date(third))).toEqual([
      expect.objectContaining({ minute: iso(M1), value: '1300' }),
      expect.objectContaining({ minute: iso(M1 + MINUTE), value: '1307' }),
      expect.objectContaining({ minute: iso(M1 + 2 * MINUTE), value: '1300' }),
    ]);
  });
});

describe('balance history retention', () => {
  const DAY = 86_400_000;
  // Retention counts by the database's clock: NOW is a real minute, the one before the current one.
  const NOW = Math.floor(Date.now() / MINUTE) * MINUTE - MINUTE;
  /** Prunes with `days` of retention, the worker's clock (Date) `workerAheadMs` off the real one. */
  const prune = async (days: number, workerAheadMs = 0) => {
    vi.useRealTimers();
    vi.useFakeTimers({ toFake: ['Date'], now: Date.now() + workerAheadMs });
    return await new MockActivityEnvironment(undefined, { logger }).run(
      createPruneBalanceHistory(db, metrics, days),
    );
  };
  /** A publication of the minute `at`, applied by KeyDB at `at` (recorded as publishBalances does). */
  let visa = 1300;
  let mastercard = 1800;
  const publishMinute = async (at: number) => {
    await recordPublication(db, {
      boundary: new Date(at),
      writtenAt: new Date(at),
      writeOffsetMs: 0,
      workflowId: 'sync',
      runId: `run-${at}`,
      attempt: 1,
      writer: `run-${at}/1/1`,
      written: [
        { key: '1_Visa', balance: String(visa) },
        { key: '2_Mastercard', balance: String(mastercard) },
      ],
      removed: [],
    });
  };
  const spend = (providerId: number, value: string) => {
    if (providerId === 1) visa += Number(value);
    else mastercard += Number(value);
  };
  beforeEach(() => {
    [visa, mastercard] = [1300, 1800];
  });
  /** Minutes 5, 4, 3 and 1 days before NOW and NOW itself; each of the first four changes one key. */
  const publishFiveDays = async () => {
    await publishMinute(NOW - 5 * DAY);
    spend(1, '10');
    await publishMinute(NOW - 4 * DAY);
    spend(2, '-10');
    await publishMinute(NOW - 3 * DAY);
    spend(1, '10');
    await publishMinute(NOW - DAY);
    await publishMinute(NOW);
  };
  const publications = async () =>
    (await rows(db, 'SELECT instant FROM balance_sync_publications ORDER BY instant')).map((row) =>
      (row.instant as Date).getTime(),
    );

  it('deletes what is older than the cutoff and keeps every answer after it', async () => {
    await publishFiveDays();
    const asked = [NOW - 3 * DAY, NOW - 2 * DAY, NOW - DAY + 1, NOW].map((t) => new Date(t));
    const before = await Promise.all(asked.map((t) => balancesAt(db, t)));
    expect(await prune(2)).toEqual({
      cutoff: iso(NOW - 2 * DAY),
      oldestKept: iso(NOW - 3 * DAY),
      publicationsDeleted: 2,
      changesDeleted: 2,
      checkpointsDeleted: 1,
      notesDeleted: 0,
    });
    expect(await Promise.all(asked.map((t) => balancesAt(db, t)))).toEqual(before);
    expect(before[1]).toMatchObject({ minute: iso(NOW - 3 * DAY), balances: { '1_Visa': '1310' } });
    await expect(balancesAt(db, new Date(NOW - 4 * DAY))).rejects.toThrow(NoPublicationError);
    // 1_Visa keeps its change of 4 days ago (still its value at the oldest kept minute).
    expect(
      await rows(db, 'SELECT key, value FROM balance_sync_balance_changes ORDER BY instant, key'),
    ).toEqual([
      { key: '1_Visa', value: '1310' },
      { key: '2_Mastercard', value: '1790' },
      { key: '1_Visa', value: '1320' },
    ]);
    // The checkpoint of 5 days ago goes; the one at the oldest kept minute stays.
    expect(await rows(db, 'SELECT instant FROM balance_sync_balance_checkpoints ORDER BY instant')).toEqual([
      { instant: new Date(NOW - 3 * DAY) },
    ]);
    expect(await prune(2)).toMatchObject({
      publicationsDeleted: 0,
      changesDeleted: 0,
      checkpointsDeleted: 0,
    });
    expect((await metrics.balanceHistoryPrunedRows.get()).values[0]?.value).toBe(5);
  });

  it('keeps everything with BALANCE_HISTORY_DAYS=0, or while nothing is older than the cutoff', async () => {
    await publishMinute(NOW - 5 * DAY);
    spend(1, '10');
    await publishMinute(NOW - 4 * DAY);
    expect(await prune(0)).toEqual({
      cutoff: null,
      oldestKept: null,
      publicationsDeleted: 0,
      changesDeleted: 0,
      checkpointsDeleted: 0,
      notesDeleted: 0,
    });
    expect(await prune(6)).toMatchObject({ oldestKept: null, publicationsDeleted: 0 });
    expect(await count('balance_sync_publications')).toBe(2);
    expect(await count('balance_sync_balance_changes')).toBe(3);
  });

  it('deletes the unconfirmed-write notes before the oldest kept publication, and keeps the gaps after it', async () => {
    await publishFiveDays();
    const note = (writer: string, from: number, until: number) =>
      db.query(
        `INSERT INTO balance_sync_unconfirmed_writes (writer, minute, may_apply_from, may_apply_until)
         VALUES ($1, NULL, $2, $3)`,
        [writer, new Date(from), new Date(until)],
      );
    await note('old', NOW - 5 * DAY + 1, NOW - 5 * DAY + 2);
    await note('reaches-the-kept', NOW - 3 * DAY - 1, NOW - 3 * DAY + 1);
    await note('recent', NOW - DAY + 1, NOW - DAY + 2);
    await expect(balancesAt(db, new Date(NOW - 3 * DAY))).rejects.toThrow(HistoryGapError);
    expect(await prune(2)).toMatchObject({ oldestKept: iso(NOW - 3 * DAY), notesDeleted: 1 });
    expect(
      (await rows(db, 'SELECT writer FROM balance_sync_unconfirmed_writes ORDER BY writer')).map(
        (r) => r.writer,
      ),
    ).toEqual(['reaches-the-kept', 'recent']);
    // The gaps the kept notes make are still answered as gaps.
    await expect(balancesAt(db, new Date(NOW - 3 * DAY))).rejects.toThrow(HistoryGapError);
    await expect(balancesAt(db, new Date(NOW - DAY + 1))).rejects.toThrow(HistoryGapError);
    expect(await prune(2)).toMatchObject({ notesDeleted: 0 });
  });

  it("prunes by the database's clock: a worker clock 200 days ahead deletes only what the retention allows", async () => {
    await publishFiveDays();
    expect(await prune(2, 200 * DAY)).toMatchObject({
      oldestKept: iso(NOW - 3 * DAY),
      publicationsDeleted: 2,
    });
    expect(await publications()).toEqual([NOW - 3 * DAY, NOW - DAY, NOW]);
  });

  it("prunes by the database's clock: a worker clock 10 days behind still deletes what is past the retention", async () => {
    await publishFiveDays();
    expect(await prune(2, -10 * DAY)).toMatchObject({
      oldestKept: iso(NOW - 3 * DAY),
      publicationsDeleted: 2,
    });
    expect(await publications()).toEqual([NOW - 3 * DAY, NOW - DAY, NOW]);
  });

  it('counts the retention back from the newest publication when the service published nothing for longer', async () => {
    // Published until 12 days ago, then stopped: 10 days of retention keep 10 days before that minute.
    await publishMinute(NOW - 30 * DAY);
    spend(1, '10');
    await publishMinute(NOW - 20 * DAY);
    spend(1, '10');
    await publishMinute(NOW - 12 * DAY);
    expect(await prune(10)).toMatchObject({
      cutoff: iso(NOW - 22 * DAY),
      oldestKept: iso(NOW - 30 * DAY),
      publicationsDeleted: 0,
    });
    expect(await publications()).toEqual([NOW - 30 * DAY, NOW - 20 * DAY, NOW - 12 * DAY]);
  });
});
