import type { Redis } from 'ioredis';
import { liveInstanceQueues } from '../keydb/sync-instances.js';

/**
 * The own task queues of the app instances alive now (src/keydb/sync-instances.ts), sorted: SyncBalances
 * starts one writer on each of two, so the two never run in one process. None without a registry.
 */
export function createSyncWriterQueues(keydb: Redis, syncTaskQueue: string | undefined) {
  return async function syncWriterQueues(): Promise<string[]> {
    return syncTaskQueue ? await liveInstanceQueues(keydb, syncTaskQueue) : [];
  };
}
