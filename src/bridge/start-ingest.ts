import { WorkflowExecutionAlreadyStartedError, type Client } from '@temporalio/client';
import { randomUUID } from 'node:crypto';
import type { OriginalMessage } from '../activities/index.js';
import { readIngestRun } from '../ingest-run-input.js';
import type { Transaction } from './parse-transaction.js';

/**
 * The IngestTransaction workflow ID. With an AMQP message_id the ID is stable, so a redelivery
 * maps to the same workflow and the same ledger row (exactly once). Without one it is random,
 * so a redelivery after a crash between start and ack can add a second row (at least once).
 */
export function ingestWorkflowId(messageId?: string): string {
  return messageId ? `ingest-${messageId}` : `ingest-anon-${randomUUID()}`;
}

export interface StartIngestOptions {
  taskQueue: string;
  workflowId: string;
  transaction: Transaction;
  receivedAtMs: number;
  /** sha256 (hex) of the body, in the input: the ledger keeps it, and the bridge reads it back on a reused id. */
  bodySha256: string;
  original: OriginalMessage;
  eager: boolean;
}

export type StartOutcome = 'started' | 'existing' | 'message_id_conflict';

/** A start's outcome; a new run also says whether its first task came back with the start (eager). */
export type StartResult =
  { outcome: 'started'; eagerly: boolean } | { outcome: Exclude<StartOutcome, 'started'> };

/**
 * Starts IngestTransaction; resolves once Temporal has it, whether new or already there. An existing
 * run started with another body's fingerprint means the message_id was reused: `message_id_conflict`.
 * The fingerprint is read back from that run's input (a rare read: a redelivery or a reused id) rather
 * than kept in a memo on every start: without the memo the drain's ratio to its ceiling rose in five
 * paired rounds out of five (docs/BENCHMARKS.md, section 1).
 * A failed run (its message was dead-lettered) does not block a new one, so a replayed dead letter runs.
 */
export async function startIngest(client: Client, options: StartIngestOptions): Promise<StartResult> {
  const { transaction } = options;
  try {
    const handle = await client.workflow.start('IngestTransaction', {
      taskQueue: options.taskQueue,
      workflowId: options.workflowId,
      workflowIdReusePolicy: 'ALLOW_DUPLICATE_FAILED_ONLY',
      // FAIL (the default) reports a running duplicate too, so its fingerprint can be compared.
      workflowIdConflictPolicy: 'FAIL',
      args: [
        {
          providerId: transaction.providerId,
          value: transaction.value,
          receivedAtMs: options.receivedAtMs,
          bodySha256: options.bodySha256,
          original: options.original,
        },
      ],
      staticSummary: `provider ${transaction.providerId}: ${transaction.value}`,
      requestEagerStart: options.eager,
    });
    return { outcome: 'started', eagerly: handle.eagerlyStarted };
  } catch (error) {
    if (!(error instanceof WorkflowExecutionAlreadyStartedError)) throw error;
    const recorded = (await readIngestRun(client, options.workflowId)).input?.bodySha256;
    // Runs started before fingerprints existed have none: the same id is taken as the same message.
    return {
      outcome:
        typeof recorded === 'string' && recorded !== options.bodySha256 ? 'message_id_conflict' : 'existing',
    };
  }
}
