// Bench-only workflows, bundled by the benchmarks next to the service's own (never deployed).
import { proxyActivities, proxyLocalActivities, workflowInfo } from '@temporalio/workflow';
import type { IngestTransactionInput } from '../../src/workflows/index.js';
import type { BenchActivities, BatchItem } from '../lib/bench-activities.js';

export * from '../../src/workflows/index.js';

// The same retry policy as IngestTransaction's local activity.
const retry = {
  initialInterval: '200 milliseconds',
  backoffCoefficient: 2,
  maximumInterval: '10 seconds',
  nonRetryableErrorTypes: ['UnknownProvider', 'InvalidTransaction'],
};
const normal = proxyActivities<BenchActivities>({ startToCloseTimeout: '10 seconds', retry });
const local = proxyLocalActivities<BenchActivities>({
  startToCloseTimeout: '10 seconds',
  localRetryThreshold: '10 seconds',
  retry,
});

/** Does nothing: the cost of a workflow start, one workflow task and its completion. */
export async function BenchEmpty(): Promise<void> {}

/**
 * Runs one local activity that does nothing, with IngestTransaction's options: the least one
 * IngestTransaction per message can cost (a start, two workflow tasks, the local activity's marker,
 * the completion), without the input, memo, insert or anything else of the app's own.
 */
export async function BenchLocalNoop(): Promise<void> {
  await local.noop();
}

/** IngestTransaction with a normal (task-queue) activity instead of a local one. */
export async function BenchNormalInsert(input: IngestTransactionInput) {
  return await normal.recordTransaction({ ingestKey: workflowInfo().workflowId, ...input });
}

/** Records a batch of transactions with one local activity (one multi-row statement). */
export async function BenchBatchInsert(items: BatchItem[]) {
  return await local.recordTransactions(items);
}
