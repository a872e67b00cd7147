import { patched, proxyActivities } from '@temporalio/workflow';
import type { Activities, PruneBalanceHistoryResult, ReconcileBalancesResult } from '../activities/index.js';

const { reconcileBalances, pruneBalanceHistory } = proxyActivities<Activities>({
  startToCloseTimeout: '10 minutes',
  retry: {
    initialInterval: '1 second',
    backoffCoefficient: 2,
    maximumInterval: '1 minute',
    maximumAttempts: 10,
  },
});

/**
 * Corrects any drift between the running sums and the full aggregate, and reports it; then deletes
 * balance history older than BALANCE_HISTORY_DAYS. A correction reaches KeyDB, and the history, with
 * the next published minute.
 */
export async function ReconcileBalances(): Promise<
  ReconcileBalancesResult & { historyPruned?: PruneBalanceHistoryResult }
> {
  const result = await reconcileBalances();
  if (!patched('reconcile-prunes-balance-history')) return result;
  return { ...result, historyPruned: await pruneBalanceHistory() };
}
