import { WorkflowExecutionAlreadyStartedError, type Client } from '@temporalio/client';
import { randomUUID } from 'node:crypto';
import type { Transaction } from './parse-transaction.js';

/**
 * The IngestTransaction workflow ID. With an AMQP message_id the ID is stable, so a redelivery
 * maps to the same workflow and the same ledger row (exactly once). Without one it is random,
 * so a redelivery after a crash between start and ack can add a second row (at least once).
 */
export function ingestWorkflowId(messageId: string | undefined): string {
  return messageId ? `ingest-${messageId}` : `ingest-anon-${randomUUID()}`;
}

export interface StartIngestOptions {
  taskQueue: string;
  workflowId: string;
  transaction: Transaction;
  receivedAtMs: number;
  eager: boolean;
}

/** Starts IngestTransaction; resolves once Temporal has it, whether new or already started. */
export async function startIngest(
  client: Client,
  options: StartIngestOptions,
): Promise<'started' | 'existing'> {
  const { transaction } = options;
  try {
    await client.workflow.start('IngestTransaction', {
      taskQueue: options.taskQueue,
      workflowId: options.workflowId,
      workflowIdReusePolicy: 'REJECT_DUPLICATE',
      workflowIdConflictPolicy: 'USE_EXISTING',
      args: [
        { providerId: transaction.providerId, value: transaction.value, receivedAtMs: options.receivedAtMs },
      ],
      memo: { providerId: transaction.providerId, value: transaction.value },
      staticSummary: `provider ${transaction.providerId}: ${transaction.value}`,
      requestEagerStart: options.eager,
    });
    return 'started';
  } catch (error) {
    if (error instanceof WorkflowExecutionAlreadyStartedError) return 'existing';
    throw error;
  }
}
