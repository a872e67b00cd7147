import { log } from '@temporalio/activity';
import type pg from 'pg';
import type { AppMetrics } from '../metrics.js';

/** The peers whose clocks the sync compares with its own. */
export type ClockPeer = 'temporal' | 'postgres' | 'keydb';

/** This process's clock minus a peer's (positive: this clock is ahead). */
export interface ClockSkew {
  skewMs: number;
  /** Half the round trip it was read in; null when it was not read in a round trip (Temporal). */
  uncertaintyMs: number | null;
}

/** Past this, a skew is named in a warn line (and ClockSkew alerts on the gauge). */
export const CLOCK_SKEW_WARN_MS = 250;

const POSTGRES_NOW = `SELECT (extract(epoch FROM clock_timestamp()) * 1000)::float8 AS now_ms`;

/** Postgres's `clock_timestamp()` read at the midpoint of one round trip, ± half of it. */
async function readPostgresClock(pool: pg.Pool): Promise<ClockSkew> {
  const sent = Date.now();
  const { rows } = await pool.query<{ now_ms: number }>(POSTGRES_NOW);
  const received = Date.now();
  return { skewMs: (sent + received) / 2 - Number(rows[0]?.now_ms), uncertaintyMs: (received - sent) / 2 };
}

/**
 * The tighter of two reads (the first also warms the connection, whose handshake would otherwise
 * skew the midpoint by tens of ms): the error is at most half that read's round trip.
 */
export async function postgresClockSkew(pool: pg.Pool): Promise<ClockSkew> {
  const first = await readPostgresClock(pool);
  const second = await readPostgresClock(pool);
  return (second.uncertaintyMs ?? 0) <= (first.uncertaintyMs ?? 0) ? second : first;
}

/**
 * When this attempt reached the worker minus when the Temporal server stamped it scheduled. One-sided:
 * it reads high by the task's dispatch time (schedule-to-start plus delivery; +13 to +40 ms on a quiet
 * machine, more under load), never low. So a clock ahead of Temporal is never
 * under-reported; one behind reads nearer zero by the dispatch time.
 */
export function temporalClockSkew(receivedAtMs: number, scheduledServerMs: number): ClockSkew {
  return { skewMs: receivedAtMs - scheduledServerMs, uncertaintyMs: null };
}

/** Exports each skew (`balance_sync_clock_skew_seconds{peer}`) and names those past CLOCK_SKEW_WARN_MS in one warn line. */
export function reportClockSkew(metrics: AppMetrics, skews: Partial<Record<ClockPeer, ClockSkew>>) {
  const off: Record<string, ClockSkew> = {};
  for (const [peer, skew] of Object.entries(skews)) {
    metrics.clockSkewSeconds.set({ peer }, skew.skewMs / 1000);
    if (Math.abs(skew.skewMs) > CLOCK_SKEW_WARN_MS) {
      off[peer] = {
        skewMs: Math.round(skew.skewMs),
        uncertaintyMs: skew.uncertaintyMs && Math.round(skew.uncertaintyMs),
      };
    }
  }
  if (Object.keys(off).length === 0) return;
  log.warn(
    `this worker's clock is off from ${Object.keys(off).join(', ')} (skewMs: this clock minus theirs); the minute is written at this clock's :00 and its offset measured on it`,
    { clockSkew: off },
  );
}
