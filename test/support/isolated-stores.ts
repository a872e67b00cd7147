import { Redis } from 'ioredis';
import type pg from 'pg';
import { resetDatabase } from './harness.js';
import { createScratchDatabase } from './scratch-database.js';
import { startThrowawayRedis } from './throwaway-services.js';

export interface IsolatedStores {
  /** A database of its own, loaded with the original producer's schema and seed. */
  db: pg.Pool;
  /** A Redis of its own (KeyDB stand-in). */
  keydb: Redis;
  /** Config overrides that point an app at these stores. */
  overrides: { DATABASE_URL: string; KEYDB_URL: string };
  stop(): Promise<void>;
}

/**
 * Postgres and KeyDB that no other test file touches, so a file that waits on the clock can run
 * beside the integration files instead of after them.
 */
export async function isolatedStores(prefix: string): Promise<IsolatedStores> {
  const [scratch, redis] = await Promise.all([createScratchDatabase(prefix), startThrowawayRedis()]);
  await resetDatabase(scratch.pool);
  const keydb = new Redis(redis.url);
  return {
    db: scratch.pool,
    keydb,
    overrides: { DATABASE_URL: scratch.url, KEYDB_URL: redis.url },
    async stop() {
      keydb.disconnect();
      await Promise.all([scratch.drop(), redis.stop()]);
    },
  };
}
