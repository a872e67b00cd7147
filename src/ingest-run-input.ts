import type { Client } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import type { IngestTransactionInput } from './workflows/index.js';

/**
 * An IngestTransaction run's history events and the input it was started with (its first event).
 * Without `runId`: the workflow ID's latest run.
 */
export async function readIngestRun(client: Client, workflowId: string, runId?: string) {
  const history = await client.workflow.getHandle(workflowId, runId).fetchHistory();
  const events = history.events ?? [];
  const payload = events[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0];
  const input = payload ? defaultPayloadConverter.fromPayload<IngestTransactionInput>(payload) : undefined;
  return { events, input };
}
