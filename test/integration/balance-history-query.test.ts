import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Server } from 'node:http';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordPublication, type Publication } from '../../src/activities/record-publication.js';
import { balancesAt } from '../../src/history/balance-history.js';
import { startHttpServer } from '../../src/http/server.js';
import { createMetrics } from '../../src/metrics.js';
import { migrate } from '../../src/postgres/schema.js';
import { REPO_ROOT } from '../support/app-process.js';
import { PRODUCER_FIXTURE } from '../support/harness.js';
import { createScratchDatabase, type ScratchDatabase } from '../support/scratch-database.js';

/** `npm run balances` (the built script, as npm runs it) and GET /balances, over a recorded history. */
let scratch: ScratchDatabase;
let db: pg.Pool;
const M1 = Date.parse('2025-01-01T10:01:00Z');
const MINUTE = 60_000;
const iso = (ms: number) => new Date(ms).toISOString();
const TOKEN = 'a-long-enough-test-token';

const publication = (
  minute: number,
  written: Record<string, string>,
  removed: string[] = [],
): Publication => ({
  boundary: new Date(minute),
  writtenAt: new Date(minute + 15),
  writeOffsetMs: 15,
  workflowId: `sync-balances-${iso(minute - 5_000)}`,
  runId: 'run',
  attempt: 1,
  writer: `run/${minute}/1`,
  written: Object.entries(written).map(([key, balance]) => ({ key, balance })),
  removed,
});

/** Three minutes (10:01, 10:02, 10:04), each applied 15 ms after it; 2_Mastercard removed at 10:04. Once per file. */
let seeded: Promise<void> | undefined;
const seed = () =>
  (seeded ??= (async () => {
    await recordPublication(db, publication(M1, { '1_Visa': '1300', '2_Mastercard': '1800.50' }));
    await recordPublication(db, publication(M1 + MINUTE, { '1_Visa': '1900', '2_Mastercard': '1800.50' }));
    await recordPublication(db, publication(M1 + 3 * MINUTE, { '1_Visa': '1899.75' }, ['2_Mastercard']));
  })());

/** Runs dist/src/ops/balances.js from an empty directory (no .env), with the scratch database. */
function balances(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  const cwd = mkdtempSync(join(tmpdir(), 'balances-cli-'));
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [join(REPO_ROOT, 'dist/src/ops/balances.js'), ...args],
      { cwd, env: { PATH: process.env.PATH ?? '', DATABASE_URL: scratch.url } },
      (error, stdout, stderr) => resolve({ status: error ? Number(error.code) : 0, stdout, stderr }),
    );
  });
}

beforeAll(async () => {
  scratch = await createScratchDatabase('balance_sync_history_query');
  db = scratch.pool;
  await db.query(PRODUCER_FIXTURE);
  await migrate(db);
});

afterAll(async () => {
  await scratch?.drop();
});

describe('npm run balances', () => {
  it('refuses a time before the first recorded publication with one line and exit 1', async () => {
    expect(await balances('--at', iso(M1))).toEqual({
      status: 1,
      stdout: '',
      stderr: 'balances: no publication recorded yet\n',
    });
  });

  it('answers --at in JSON and as a table, --key alone, and --key --from --to', async () => {
    await seed();

    const json = await balances('--at', '2025-01-01T12:02:30+02:00', '--json');
    expect(json.status).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual({
      minute: iso(M1 + MINUTE),
      publishedAt: iso(M1 + MINUTE + 15),
      balances: { '1_Visa': '1900', '2_Mastercard': '1800.50' },
    });
    const text = await balances('--at', iso(M1 + 2 * MINUTE), '--key', '2_Mastercard');
    expect(text.stdout).toBe(
      'minute        2025-01-01T10:02:00.000Z\npublished at  2025-01-01T10:02:00.015Z\n\n' +
        'KEY           VALUE\n2_Mastercard  1800.50\n',
    );
    const range = await balances(
      '--key',
      '2_Mastercard',
      '--from',
      iso(M1),
      '--to',
      iso(M1 + 3 * MINUTE + 15),
      '--json',
    );
    expect(JSON.parse(range.stdout)).toEqual({
      key: '2_Mastercard',
      from: iso(M1),
      to: iso(M1 + 3 * MINUTE + 15),
      changes: [
        { minute: iso(M1), publishedAt: iso(M1 + 15), value: '1800.50' },
        { minute: iso(M1 + 3 * MINUTE), publishedAt: iso(M1 + 3 * MINUTE + 15), value: null },
      ],
      gaps: [{ from: iso(M1 + 2 * MINUTE), to: iso(M1 + 2 * MINUTE) }],
      unknown: [],
    });
    // --to defaults to now: every minute since 10:05 is a gap, up to the current one.
    const listed = (await balances('--key', '1_Visa', '--from', iso(M1 + 16))).stdout;
    expect(listed).toMatch(
      new RegExp(
        '^MINUTE                    PUBLISHED AT              VALUE\n' +
          '2025-01-01T10:02:00.000Z  2025-01-01T10:02:00.015Z  1900\n' +
          '2025-01-01T10:04:00.000Z  2025-01-01T10:04:00.015Z  1899.75\n\n' +
          'minutes not published \\(gaps\\):\n' +
          '  2025-01-01T10:03:00.000Z\n' +
          '  2025-01-01T10:05:00.000Z to 20\\d\\d-\\d\\d-\\d\\dT\\d\\d:\\d\\d:00.000Z\n$',
      ),
    );
  });

  it('refuses, as unknown, a time when a write that may have been applied was not recorded', async () => {
    await seed();
    // A write of 10:03 sent at 10:03:00.010, which KeyDB could apply until 10:03:01.010: never
    // recorded, so from 10:03:00.010 until the next publication after 10:03:01.010 (10:04:00.015).
    await db.query(
      `INSERT INTO balance_sync_unconfirmed_writes (writer, minute, may_apply_from, may_apply_until)
       VALUES ('lost', $1, $2, $3)`,
      [iso(M1 + 2 * MINUTE), iso(M1 + 2 * MINUTE + 10), iso(M1 + 2 * MINUTE + 1_010)],
    );
    try {
      expect(await balances('--at', iso(M1 + 2 * MINUTE + 30_000))).toEqual({
        status: 1,
        stdout: '',
        stderr:
          `balances: KeyDB's balances at ${iso(M1 + 2 * MINUTE + 30_000)} are unknown: a write that may ` +
          `have been applied from ${iso(M1 + 2 * MINUTE + 10)} was not recorded (a gap in the history, ` +
          `until ${iso(M1 + 3 * MINUTE + 15)})\n`,
      });
      // Just before the write was sent, and from the next publication on, the history answers.
      expect(JSON.parse((await balances('--at', iso(M1 + 2 * MINUTE + 9), '--json')).stdout)).toMatchObject({
        minute: iso(M1 + MINUTE),
      });
      expect(JSON.parse((await balances('--at', iso(M1 + 3 * MINUTE + 15), '--json')).stdout)).toMatchObject({
        minute: iso(M1 + 3 * MINUTE),
      });
      const range = await balances(
        '--key',
        '1_Visa',
        '--from',
        iso(M1),
        '--to',
        iso(M1 + 3 * MINUTE),
        '--json',
      );
      expect(JSON.parse(range.stdout)).toMatchObject({
        unknown: [
          { from: iso(M1 + 2 * MINUTE + 10), to: iso(M1 + 3 * MINUTE + 15), minute: iso(M1 + 2 * MINUTE) },
        ],
      });
    } finally {
      await db.query('DELETE FROM balance_sync_unconfirmed_writes');
    }
  });

  it('refuses a time without a zone or a bad flag combination with exit 2, pointing at --help', async () => {
    for (const args of [
      ['--at', '2025-01-01T10:01:00'],
      ['--at', iso(M1), '--from', iso(M1)],
      ['--from', iso(M1)],
    ]) {
      const { status, stderr } = await balances(...args);
      expect(status).toBe(2);
      expect(stderr).toMatch(/^balances: .+ \(npm run balances -- --help\)\n$/);
    }
  });
});

describe('GET /balances', () => {
  let server: Server | undefined;
  const serve = async (token?: string) => {
    const started = await startHttpServer(0, {
      registry: createMetrics().registry,
      readiness: () => ({ waitingFor: 'nothing' }),
      balances: token ? { token, balancesAt: (at, key) => balancesAt(db, at, key) } : undefined,
    });
    server = started.server;
    return `http://127.0.0.1:${started.port}/balances`;
  };
  const get = async (url: string, authorization?: string) => {
    const response = await fetch(url, authorization ? { headers: { authorization } } : {});
    return { status: response.status, body: await response.text() };
  };

  afterAll(() => server?.close());

  it('is not there without BALANCES_API_TOKEN: 404', async () => {
    const url = await serve();
    expect((await get(`${url}?at=${iso(M1)}`, `Bearer ${TOKEN}`)).status).toBe(404);
    server?.close();
  });

  it('answers 400 naming the offset for at=…+24:00, and nothing of Postgres', async () => {
    await seed();
    const url = await serve(TOKEN);
    const at = '2025-01-01T10:02:30+24:00';
    expect(await get(`${url}?at=${encodeURIComponent(at)}`, `Bearer ${TOKEN}`)).toEqual({
      status: 400,
      body: JSON.stringify({ error: `at: "${at}" has a time zone offset outside -14:00 to +14:00` }),
    });
    server?.close();
  });

  it("answers 400 without Postgres's text when Postgres refuses a time (22007, 22008, 22009)", async () => {
    const refusedBy = async (literal: string) => {
      const started = await startHttpServer(0, {
        registry: createMetrics().registry,
        readiness: () => ({ waitingFor: 'nothing' }),
        balances: {
          token: TOKEN,
          balancesAt: async () => {
            await db.query('SELECT $1::timestamptz', [literal]);
            throw new Error('Postgres took the time');
          },
        },
      });
      const answer = await get(
        `http://127.0.0.1:${started.port}/balances?at=2025-01-01T10:02:30Z`,
        `Bearer ${TOKEN}`,
      );
      started.server.close();
      return answer;
    };
    const refusal = {
      status: 400,
      body: JSON.stringify({ error: 'at: not a time the balance history can look up' }),
    };
    expect(await refusedBy('yesterday at noon')).toEqual(refusal); // 22007
    expect(await refusedBy('2025-02-30 10:00:00Z')).toEqual(refusal); // 22008
    expect(await refusedBy('2025-01-01 10:00:00+24:00')).toEqual(refusal); // 22009
  });

  it('answers 401 without the right bearer token, 400 with the reason for a bad at, else the JSON', async () => {
    await seed();
    const url = await serve(TOKEN);
    const at = `${url}?at=${encodeURIComponent('2025-01-01T10:02:30Z')}`;
    for (const authorization of [
      undefined,
      TOKEN,
      `Bearer ${TOKEN}x`,
      `Bearer ${TOKEN.slice(1)}`,
      'Bearer ',
    ]) {
      const refused = await get(at, authorization);
      expect(refused.status).toBe(401);
      expect(refused.body).not.toContain(TOKEN);
    }
    expect(await get(`${url}?at=yesterday`, `Bearer ${TOKEN}`)).toEqual({
      status: 400,
      body: JSON.stringify({
        error: 'at: "yesterday" is not an ISO 8601 time with a time zone (e.g. 2026-01-01T14:03:00Z)',
      }),
    });
    expect((await get(url, `Bearer ${TOKEN}`)).status).toBe(400);
    expect((await get(`${url}?at=2030-02-30T00:00:00Z`, `Bearer ${TOKEN}`)).status).toBe(400);
    expect((await get(`${url}?at=2000-01-01T00:00:00Z`, `Bearer ${TOKEN}`)).status).toBe(404);
    await db.query(
      `INSERT INTO balance_sync_unconfirmed_writes (writer, minute, may_apply_from, may_apply_until)
       VALUES ('lost', NULL, $1, $2)`,
      [iso(M1 + 3 * MINUTE + 30_000), iso(M1 + 3 * MINUTE + 31_000)],
    );
    try {
      const unknown = await get(`${url}?at=2025-01-01T10:04:45Z`, `Bearer ${TOKEN}`);
      expect(unknown.status).toBe(404);
      expect(JSON.parse(unknown.body)).toEqual({
        error: expect.stringContaining('are unknown'),
        gap: { from: iso(M1 + 3 * MINUTE + 30_000), to: null },
      });
    } finally {
      await db.query('DELETE FROM balance_sync_unconfirmed_writes');
    }
    const ok = await get(`${at}&key=1_Visa`, `Bearer ${TOKEN}`);
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body)).toEqual({
      minute: iso(M1 + MINUTE),
      publishedAt: iso(M1 + MINUTE + 15),
      balances: { '1_Visa': '1900' },
    });
  });
});
