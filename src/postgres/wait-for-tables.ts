import pRetry from 'p-retry';
import type pg from 'pg';
import type { Logger } from 'pino';
import { missingProducerTables } from './schema.js';

/**
 * Waits, with capped exponential backoff, until the producer's tables exist (the producer may start
 * after the app). Gives up after `maxWaitSeconds` with an error naming the missing tables.
 */
export async function waitForProducerTables(
  pool: pg.Pool,
  log: Logger,
  maxWaitSeconds: number,
  signal?: AbortSignal,
): Promise<void> {
  await pRetry(
    async () => {
      const missing = await missingProducerTables(pool);
      if (missing.length > 0) {
        throw new Error(`waiting for the producer's tables: ${missing.join(', ')} not found`);
      }
    },
    {
      retries: Number.POSITIVE_INFINITY,
      minTimeout: 250,
      maxTimeout: 10_000,
      factor: 2,
      maxRetryTime: maxWaitSeconds * 1000,
      signal,
      onFailedAttempt: ({ error, attemptNumber }) => {
        log.warn({ attempt: attemptNumber, err: error.message }, 'Postgres not ready for balance-sync yet');
      },
    },
  );
}
