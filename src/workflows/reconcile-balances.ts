import { proxyActivities } from '@temporalio/workflow';
import type { Activities, ReconcileBalancesResult } from '../activities/index.js';

const { reconcileBalances } = proxyActivities<Activities>({
  startToCloseTimeout: '10 minutes',
  retry: {
    initialInterval: '1 second',
    backoffCoefficient: 2,
    maximumInterval: '1 minute',
    maximumAttempts: 10,
  },
});

/** Corrects any drift between the running sums and the full aggregate, and reports it. */
export async function ReconcileBalances(): Promise<ReconcileBalancesResult> {
  return await reconcileBalances();
}
