import { proxyLocalActivities, workflowInfo } from '@temporalio/workflow';
import type { Activities, RecordTransactionResult } from '../activities/index.js';

export interface IngestTransactionInput {
  providerId: number;
  /** Exact decimal literal from the message. */
  value: string;
  receivedAtMs?: number;
}

// A local activity: one insert needs no task-queue round trip (measured in docs/BENCHMARKS.md).
// Retries until Postgres answers; a bad provider or value fails the run at once.
const { recordTransaction } = proxyLocalActivities<Activities>({
  startToCloseTimeout: '10 seconds',
  localRetryThreshold: '10 seconds',
  retry: {
    initialInterval: '200 milliseconds',
    backoffCoefficient: 2,
    maximumInterval: '10 seconds',
    nonRetryableErrorTypes: ['UnknownProvider', 'InvalidTransaction'],
  },
});

/** Writes one queued transaction to historical_transactions, exactly once per workflow ID. */
export async function IngestTransaction(input: IngestTransactionInput): Promise<RecordTransactionResult> {
  return await recordTransaction({ ingestKey: workflowInfo().workflowId, ...input });
}
