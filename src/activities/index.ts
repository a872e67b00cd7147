import type { Redis } from 'ioredis';
import type pg from 'pg';
import type { IngestOutages } from '../ingest-outages.js';
import type { AppMetrics } from '../metrics.js';
import type { DeadLetterPublisher } from '../rabbitmq/dead-letters.js';
import { createDeadLetterTransaction } from './dead-letter-transaction.js';
import { createPruneBalanceHistory } from './prune-balance-history.js';
import { createPublishBalances } from './publish-balances.js';
import { createReconcileBalances } from './reconcile-balances.js';
import { createRecordTransaction } from './record-transaction.js';
import { createSyncWriterQueues } from './sync-writer-queues.js';

export interface ActivityDeps {
  /** The ingest pool (and the default for the two below). */
  pool: pg.Pool;
  /** The sync's own small pool (src/postgres/pools.ts), so its read never waits behind ingest. */
  syncPool?: pg.Pool;
  reconcilePool?: pg.Pool;
  keydb: Redis;
  metrics: AppMetrics;
  /** Where IngestTransaction puts a message it cannot record; without one that activity keeps failing. */
  deadLetters?: DeadLetterPublisher;
  /** Where the inserts report a Postgres outage, for /readyz and the gauge (default: their own). */
  outages?: IngestOutages;
  /** BALANCE_HISTORY_DAYS: how long the balance history is kept (0: for ever); default 90. */
  balanceHistoryDays?: number;
  /** Told when publishBalances has a minute in KeyDB (the bridge's hold for it ends). */
  onMinuteWritten?: (minute: Date) => void;
  /** The sync task queue whose live instances (src/keydb/sync-instances.ts) race the minute's write. */
  syncTaskQueue?: string;
}

/** All activities, closed over their clients; workflows type their proxies from this factory. */
export function createActivities({
  pool,
  syncPool,
  reconcilePool,
  keydb,
  metrics,
  deadLetters,
  outages,
  balanceHistoryDays = 90,
  onMinuteWritten,
  syncTaskQueue,
}: ActivityDeps) {
  return {
    recordTransaction: createRecordTransaction(pool, metrics, outages),
    deadLetterTransaction: createDeadLetterTransaction(deadLetters, metrics),
    publishBalances: createPublishBalances(syncPool ?? pool, keydb, metrics, onMinuteWritten),
    syncWriterQueues: createSyncWriterQueues(keydb, syncTaskQueue),
    reconcileBalances: createReconcileBalances(reconcilePool ?? pool, metrics),
    pruneBalanceHistory: createPruneBalanceHistory(reconcilePool ?? pool, metrics, balanceHistoryDays),
  };
}

export type Activities = ReturnType<typeof createActivities>;
export type { RecordTransactionInput, RecordTransactionResult } from './record-transaction.js';
export type { DeadLetterTransactionInput, OriginalMessage } from './dead-letter-transaction.js';
export type {
  PublishBalancesInput,
  PublishBalancesResult,
  UnpublishableProvider,
} from './publish-balances.js';
export type { ReconcileBalancesResult } from './reconcile-balances.js';
export type { PruneBalanceHistoryResult } from './prune-balance-history.js';
