import type { Client } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import type pg from 'pg';
import type { Logger } from 'pino';
import { publishOriginal } from '../activities/dead-letter-transaction.js';
import type { DeadLetterPublisher } from '../rabbitmq/dead-letters.js';
import type { AppMetrics } from '../metrics.js';
import type { IngestTransactionInput } from '../workflows/index.js';

export interface TerminatedRunsOptions {
  taskQueue: string;
  /** How often to look for newly terminated runs. */
  intervalMs?: number;
}

export interface TerminatedRunsDeps {
  client: Client;
  pool: pg.Pool;
  publisher: DeadLetterPublisher;
  metrics: AppMetrics;
  log: Logger;
}

/** How often terminated runs are looked for: a terminated run's message reaches the dead-letter queue within this. */
export const TERMINATED_RUNS_INTERVAL_MS = 15_000;
/** Each look re-reads this much before the newest close time seen, for visibility's lag. */
const OVERLAP_MS = 5 * 60_000;

// Claimed and dead-lettered in one transaction: a second instance waits on the claim, then skips it.
const CLAIM = `
  INSERT INTO balance_sync_terminated_runs (workflow_id, run_id) VALUES ($1, $2)
  ON CONFLICT DO NOTHING RETURNING workflow_id`;
const RECORDED = `SELECT 1 FROM balance_sync_ingest_ledger WHERE ingest_key = $1`;

/**
 * A terminated run runs no more workflow code, so it cannot dead-letter its message itself (a
 * cancelled one does). This loop finds IngestTransaction runs an operator terminated (visibility,
 * by close time) and dead-letters each one's message, read from the run's input, with code
 * `terminated`, once: balance_sync_terminated_runs records it in the transaction that publishes it.
 * A run whose row was written before the terminate is only marked.
 */
export function watchTerminatedRuns(options: TerminatedRunsOptions, deps: TerminatedRunsDeps) {
  let since: Date | undefined;
  let running: Promise<void> | undefined;
  const sweep = async () => {
    const from = since ? new Date(since.getTime() - OVERLAP_MS) : undefined;
    const query = [
      `WorkflowType = 'IngestTransaction'`,
      `ExecutionStatus = 'Terminated'`,
      `TaskQueue = ${JSON.stringify(options.taskQueue)}`,
      ...(from ? [`CloseTime > ${JSON.stringify(from.toISOString())}`] : []),
    ].join(' AND ');
    for await (const run of deps.client.workflow.list({ query })) {
      if (run.closeTime && (!since || run.closeTime > since)) since = run.closeTime;
      await deadLetterOnce(run.workflowId, run.runId, deps);
    }
  };
  const tick = () => {
    running ??= sweep()
      .catch((error: unknown) =>
        deps.log.warn({ err: (error as Error).message }, 'cannot dead-letter terminated runs yet; retrying'),
      )
      .finally(() => (running = undefined));
  };
  const timer = setInterval(tick, options.intervalMs ?? TERMINATED_RUNS_INTERVAL_MS);
  tick();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}

async function deadLetterOnce(workflowId: string, runId: string, deps: TerminatedRunsDeps): Promise<void> {
  const db = await deps.pool.connect();
  try {
    await db.query('BEGIN');
    const claimed = (await db.query(CLAIM, [workflowId, runId])).rowCount;
    if (!claimed) {
      await db.query('ROLLBACK');
      return;
    }
    const recorded = (await db.query(RECORDED, [workflowId])).rowCount;
    const history = await deps.client.workflow.getHandle(workflowId, runId).fetchHistory();
    const events = history.events ?? [];
    const payload = events[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0];
    const input = payload ? defaultPayloadConverter.fromPayload<IngestTransactionInput>(payload) : undefined;
    const why = events.at(-1)?.workflowExecutionTerminatedEventAttributes?.reason || 'no reason given';
    if (!recorded && input?.original) {
      const reason = `the IngestTransaction run was terminated before its row was written: ${why}`;
      await publishOriginal(deps.publisher, {
        original: input.original,
        code: 'terminated',
        reason,
        workflowId,
      });
      deps.metrics.messagesDeadLettered.inc({ code: 'terminated' });
      deps.log.warn({ workflowId, runId, code: 'terminated' }, 'terminated run dead-lettered');
    }
    await db.query('COMMIT');
  } catch (error) {
    await db.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    db.release();
  }
}
