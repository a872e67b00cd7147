import { Context, log } from '@temporalio/activity';
import type { Redis } from 'ioredis';
import type pg from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AppMetrics } from '../metrics.js';
import { COUNT_BALANCE_TRIGGERS_SQL, EXPECTED_TRIGGER_COUNT, migrate } from '../postgres/schema.js';

export interface PublishBalancesInput {
  /** The schedule's nominal time for this run (TemporalScheduledStartTime), ISO 8601. */
  nominalTime: string;
  /** How far before the minute the schedule fires (the activity holds until the minute); null to publish now. */
  leadMs: number | null;
}

export interface PublishBalancesResult {
  /** The minute boundary this run wrote for, or null for an off-minute run (trigger, backfill). */
  boundary: string | null;
  writtenAt: string;
  /** KeyDB write time minus the boundary, in ms; null for an off-minute run. */
  writeOffsetMs: number | null;
  providers: number;
  keysRemoved: string[];
  readMs: number;
  writeMs: number;
  triggersReinstalled: boolean;
}

const MINUTE_MS = 60_000;
const BOUNDARY_TOLERANCE_MS = 1_000;
const SLOW_WRITE_WARN_MS = 500;
/** A write may never land this late after its boundary: by then the next run owns KeyDB. */
const WRITE_DEADLINE_MS = 50_000;

const READ_BALANCES = `
  ${COUNT_BALANCE_TRIGGERS_SQL};
  SELECT d.id || '_' || d.provider_name AS key,
         trim_scale(d.initial_value + coalesce(s.tx_sum, 0))::text AS balance
  FROM initial_data d LEFT JOIN balance_sync_provider_sums s ON s.provider_id = d.id
  ORDER BY d.id;
  SELECT key FROM balance_sync_published_keys;`;

/** The minute boundary a run with this nominal time targets, or null if it is not a scheduled tick. */
export function boundaryFor(nominalTime: Date, leadMs: number | null): Date | null {
  if (leadMs === null) return null;
  const target = nominalTime.getTime() + leadMs;
  const minute = Math.round(target / MINUTE_MS) * MINUTE_MS;
  return Math.abs(target - minute) <= BOUNDARY_TOLERANCE_MS ? new Date(minute) : null;
}

type Balances = { rows: { key: string; balance: string }[]; published: string[]; triggers: number };

async function readBalances(pool: pg.Pool): Promise<Balances> {
  const results = (await pool.query(READ_BALANCES)) as unknown as pg.QueryResult[];
  const [triggers, balances, published] = results;
  return {
    triggers: (triggers?.rows[0] as { count: number } | undefined)?.count ?? 0,
    rows: (balances?.rows ?? []) as { key: string; balance: string }[],
    published: (published?.rows ?? []).map((row) => (row as { key: string }).key),
  };
}

/**
 * Waits on the wall clock for the minute boundary, then reads every provider's balance from Postgres
 * (exact NUMERIC, printed as Postgres prints it) and writes all keys to KeyDB in one MULTI/EXEC.
 * Keys of providers that no longer exist are deleted in the same step.
 */
export function createPublishBalances(pool: pg.Pool, keydb: Redis, metrics: AppMetrics) {
  return async function publishBalances(input: PublishBalancesInput): Promise<PublishBalancesResult> {
    const boundary = boundaryFor(new Date(input.nominalTime), input.leadMs);
    if (boundary) {
      // Warm both connections so the boundary pays for no handshake.
      await Promise.all([pool.query('SELECT 1'), keydb.ping()]);
      const wait = boundary.getTime() - Date.now();
      if (wait > 0) await sleep(wait, undefined, { signal: Context.current().cancellationSignal });
    }

    const readStart = performance.now();
    let balances = await readBalances(pool);
    let triggersReinstalled = false;
    if (balances.triggers !== EXPECTED_TRIGGER_COUNT) {
      // Someone recreated historical_transactions: reinstall and recount before publishing.
      log.warn('balance triggers missing on historical_transactions; reinstalling and recounting');
      await migrate(pool);
      triggersReinstalled = true;
      balances = await readBalances(pool);
    }
    const readMs = performance.now() - readStart;

    const current = new Set(balances.rows.map((row) => row.key));
    const published = new Set(balances.published);
    const newKeys = [...current].filter((key) => !published.has(key));
    const staleKeys = balances.published.filter((key) => !current.has(key));
    if (newKeys.length > 0) {
      // Record a key before it is first written, so a crash can never orphan it in KeyDB.
      await pool.query(
        'INSERT INTO balance_sync_published_keys (key) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING',
        [newKeys],
      );
    }

    if (boundary && Date.now() - boundary.getTime() > WRITE_DEADLINE_MS) {
      throw new Error(`too late to publish balances for ${boundary.toISOString()}; the next run will`);
    }
    const writeStart = performance.now();
    const transaction = keydb.multi();
    if (balances.rows.length > 0) transaction.mset(...balances.rows.flatMap((row) => [row.key, row.balance]));
    if (staleKeys.length > 0) transaction.del(...staleKeys);
    const replies = await transaction.exec();
    const writtenAt = Date.now();
    const failed = replies?.find(([error]) => error);
    if (!replies || failed) throw failed?.[0] ?? new Error('KeyDB discarded the MULTI transaction');
    const writeMs = performance.now() - writeStart;

    if (staleKeys.length > 0) {
      await pool.query('DELETE FROM balance_sync_published_keys WHERE key = ANY($1::text[])', [staleKeys]);
    }

    const writeOffsetMs = boundary ? writtenAt - boundary.getTime() : null;
    if (writeOffsetMs !== null) {
      metrics.syncWriteOffsetSeconds.observe(writeOffsetMs / 1000);
      if (Math.abs(writeOffsetMs) > SLOW_WRITE_WARN_MS) {
        log.warn('balances written late', { boundary: boundary?.toISOString(), writeOffsetMs });
      }
    }
    return {
      boundary: boundary?.toISOString() ?? null,
      writtenAt: new Date(writtenAt).toISOString(),
      writeOffsetMs,
      providers: balances.rows.length,
      keysRemoved: staleKeys,
      readMs: Math.round(readMs * 100) / 100,
      writeMs: Math.round(writeMs * 100) / 100,
      triggersReinstalled,
    };
  };
}
