import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { MockActivityEnvironment } from '@temporalio/testing';
import { Redis } from 'ioredis';
import type pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createPublishBalances, type PublishBalancesResult } from '../../src/activities/publish-balances.js';
import { createMetrics } from '../../src/metrics.js';
import { migrate } from '../../src/postgres/schema.js';
import { activityLogger } from '../support/activity-logger.js';
import { REPO_ROOT } from '../support/app-process.js';
import { resetDatabase, rows, waitFor } from '../support/harness.js';
import { createScratchDatabase, type ScratchDatabase } from '../support/scratch-database.js';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js';
import { startThrowawayRedis, type ThrowawayService } from '../support/throwaway-services.js';

/**
 * The balance history against what KeyDB really held, on the real clock: a KeyDB of this file's own
 * (CLIENT PAUSE WRITE holds the sync's write; the shared one is never paused), reached through a TCP
 * proxy that can lose the write's reply, and `redis-cli` and `npm run balances` (the built script) as
 * an operator runs them.
 */
const execFileAsync = promisify(execFile);
const MINUTE = 60_000;
const logger = activityLogger();
let scratch: ScratchDatabase;
let db: pg.Pool;
let redis: ThrowawayService;
let proxy: TcpProxy;
let keydb: Redis;

beforeAll(async () => {
  scratch = await createScratchDatabase('balance_sync_history_paused');
  db = scratch.pool;
  redis = await startThrowawayRedis();
  proxy = await startTcpProxy(redis.port);
});

afterAll(async () => {
  keydb?.disconnect();
  await proxy?.close();
  await redis?.stop();
  await scratch?.drop();
});

beforeEach(async () => {
  keydb?.disconnect();
  await resetDatabase(db);
  await migrate(db);
  await redisCli('FLUSHALL');
  keydb = new Redis(`redis://127.0.0.1:${proxy.port}/0`);
});

/** One redis-cli run against this file's KeyDB, each command a line of its output. */
async function redisCli(...commands: string[]): Promise<string[]> {
  const child = execFileAsync('redis-cli', ['-p', String(redis.port)], { encoding: 'utf8' });
  child.child.stdin?.end(commands.map((command) => `${command}\n`).join(''));
  return (await child).stdout.trimEnd().split('\n');
}

/** KeyDB's TIME and then 1_Visa, read by redis-cli in one go: the value KeyDB held at that instant. */
async function readVisa(): Promise<{ at: number; visa: string }> {
  const [seconds, micros, visa] = await redisCli('TIME', 'GET 1_Visa');
  return { at: Number(seconds) * 1000 + Math.floor(Number(micros) / 1000), visa: visa ?? '' };
}

/** `npm run balances -- --at <at> --key 1_Visa --json`: the status, and the answer or the refusal. */
async function balancesAt(at: number) {
  const script = join(REPO_ROOT, 'dist/src/ops/balances.js');
  const args = [script, '--at', new Date(at).toISOString(), '--key', '1_Visa', '--json'];
  return await new Promise<{ status: number; answer: unknown; stderr: string }>((resolve) => {
    execFile(
      process.execPath,
      args,
      { env: { PATH: process.env.PATH ?? '', DATABASE_URL: scratch.url } },
      (error, stdout, stderr) =>
        resolve({
          status: error ? Number(error.code) : 0,
          answer: stdout ? JSON.parse(stdout) : null,
          stderr,
        }),
    );
  });
}

/** The sync's run of `minute` (already past, so it writes at once, late), on the real clock. */
function publishMinute(minute: number): Promise<PublishBalancesResult> {
  const environment = new MockActivityEnvironment(
    {
      startToCloseTimeoutMs: 0,
      scheduleToCloseTimeoutMs: 0,
      workflowExecution: { workflowId: `sync-balances-${minute}`, runId: `run-${minute}` },
    },
    { logger },
  );
  return environment.run(createPublishBalances(db, keydb, createMetrics()), {
    nominalTime: new Date(minute - 5_000).toISOString(),
    leadMs: 5_000,
  });
}

const spend = (value: string) =>
  db.query('INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (1, $1)', [value]);
const noted = async () => (await rows(db, 'SELECT writer FROM balance_sync_unconfirmed_writes')).length > 0;
const applied = (result: PublishBalancesResult) => Date.parse(result.keydbWrittenAt ?? 'not written');
const visaAnswer = (minute: number, visa: string) => ({
  minute: new Date(minute).toISOString(),
  balances: { '1_Visa': visa },
});

describe('balance history with KeyDB writes held', () => {
  it('answers, between the boundary and a write KeyDB held back, what redis-cli read then', async () => {
    const boundary = Math.floor(Date.now() / MINUTE) * MINUTE;
    await publishMinute(boundary - MINUTE);
    // KeyDB takes no write for 800 ms (the write's own deadline is 1 s after it is sent): the
    // minute's write waits, late, while reads go on.
    await redisCli('CLIENT PAUSE 800 WRITE');
    await spend('5'); // after the boundary, before the write
    const publishing = publishMinute(boundary);
    await waitFor(
      'the write noted, about to be sent',
      async () => ((await noted()) ? true : undefined),
      5_000,
    );
    const read = await readVisa();
    const result = await publishing;
    expect(read).toMatchObject({ visa: '1300' });
    expect(read.at).toBeGreaterThanOrEqual(boundary);
    expect(applied(result)).toBeGreaterThan(read.at);
    expect(await redisCli('GET 1_Visa')).toEqual(['1305']);

    expect(await balancesAt(read.at)).toMatchObject({
      status: 0,
      answer: visaAnswer(boundary - MINUTE, read.visa),
    });
    expect(await balancesAt(applied(result))).toMatchObject({
      status: 0,
      answer: visaAnswer(boundary, '1305'),
    });
    expect(
      await rows(db, 'SELECT minute, boundary, instant FROM balance_sync_publications ORDER BY instant'),
    ).toEqual([
      expect.objectContaining({ minute: new Date(boundary - MINUTE) }),
      { minute: new Date(boundary), boundary: new Date(boundary), instant: new Date(applied(result)) },
    ]);
  });

  it('leaves no gap for a write KeyDB refused (OOM): the previous publication is what it held', async () => {
    const boundary = Math.floor(Date.now() / MINUTE) * MINUTE;
    const first = applied(await publishMinute(boundary - MINUTE));
    await spend('5');
    await redisCli('CONFIG SET maxmemory-policy noeviction', 'CONFIG SET maxmemory 1');
    try {
      await expect(publishMinute(boundary)).rejects.toThrow(/OOM/);
    } finally {
      await redisCli('CONFIG SET maxmemory 0');
    }
    expect(await rows(db, 'SELECT writer FROM balance_sync_unconfirmed_writes')).toEqual([]);
    const after = await readVisa();
    expect(after.visa).toBe('1300');
    expect(await balancesAt(after.at)).toMatchObject({
      status: 0,
      answer: visaAnswer(boundary - MINUTE, '1300'),
    });
    expect(after.at).toBeGreaterThan(first);
  });

  it('shows a write whose reply was lost (applied, given up on, never recorded) as a gap, never as a value KeyDB did not hold', async () => {
    const boundary = Math.floor(Date.now() / MINUTE) * MINUTE;
    const first = applied(await publishMinute(boundary - 2 * MINUTE));
    await spend('5');
    proxy.dropRepliesAfter((request) => /\bevalsha\b|\beval\b/i.test(request));
    await expect(publishMinute(boundary - MINUTE)).rejects.toThrow('Command timed out');
    proxy.dropReplies(false);
    // KeyDB applied it; the history cannot say when, so it answers nothing from its sending on.
    const after = await readVisa();
    expect(after.visa).toBe('1305');
    expect(await balancesAt(first)).toMatchObject({
      status: 0,
      answer: visaAnswer(boundary - 2 * MINUTE, '1300'),
    });
    const unknown = await balancesAt(after.at);
    expect(unknown).toMatchObject({ status: 1, answer: null });
    expect(unknown.stderr).toMatch(
      /^balances: KeyDB's balances at .+ are unknown: a write that may have been applied from /,
    );
    // The next minute's write supersedes it: the history answers again from there.
    const next = applied(await publishMinute(boundary));
    expect(await balancesAt(next)).toMatchObject({
      status: 0,
      answer: visaAnswer(boundary, (await readVisa()).visa),
    });
    expect(await balancesAt(next - 1)).toMatchObject({ status: 1 });
  });
});
