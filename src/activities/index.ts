import type { Redis } from 'ioredis';
import type pg from 'pg';
import type { AppMetrics } from '../metrics.js';
import { createPublishBalances } from './publish-balances.js';
import { createReconcileBalances } from './reconcile-balances.js';
import { createRecordTransaction } from './record-transaction.js';

export interface ActivityDeps {
  pool: pg.Pool;
  keydb: Redis;
  metrics: AppMetrics;
}

/** All activities, closed over their clients; workflows type their proxies from this factory. */
export function createActivities({ pool, keydb, metrics }: ActivityDeps) {
  return {
    recordTransaction: createRecordTransaction(pool, metrics),
    publishBalances: createPublishBalances(pool, keydb, metrics),
    reconcileBalances: createReconcileBalances(pool, metrics),
  };
}

export type Activities = ReturnType<typeof createActivities>;
export type { RecordTransactionInput, RecordTransactionResult } from './record-transaction.js';
export type { PublishBalancesInput, PublishBalancesResult } from './publish-balances.js';
export type { ReconcileBalancesResult } from './reconcile-balances.js';
