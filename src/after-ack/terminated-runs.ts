import type { Client } from '@temporalio/client';
import pTimeout from 'p-timeout';
import type pg from 'pg';
import type { Logger } from 'pino';
import { publishOriginal, type OriginalMessage } from '../activities/dead-letter-transaction.js';
import type { DeadLetterPublisher } from '../rabbitmq/dead-letters.js';
import type { AppMetrics } from '../metrics.js';
import { readIngestRun } from '../ingest-run-input.js';
import { findVanishedRuns, forgetRun } from './vanished-runs.js';

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
/** How long one sweep may take: its Temporal calls get this deadline, and a sweep still running at it fails. */
export const SWEEP_BOUND_MS = 60_000;

// Claimed and dead-lettered in one transaction: a second instance waits on the claim, then skips it.
// Terminated and deleted runs share the claims table.
const CLAIM = `
  INSERT INTO balance_sync_terminated_runs (workflow_id, run_id) VALUES ($1, $2)
  ON CONFLICT DO NOTHING RETURNING workflow_id`;
const RECORDED = `SELECT 1 FROM balance_sync_ingest_ledger WHERE ingest_key = $1`;

/** Which dependency a sweep failed on: the warn line names it. */
export type SweepDependency = 'temporal visibility' | 'temporal history' | 'postgres' | 'rabbitmq';

/** A failed sweep, with the dependency whose call failed. */
export class SweepFailure extends Error {
  constructor(
    readonly dependency: SweepDependency,
    error: unknown,
  ) {
    super(withCauses(error), { cause: error });
  }
}

/** "Failed to list workflows: Timeout expired": the Temporal SDK says why in the cause. */
function withCauses(error: unknown): string {
  const messages: string[] = [];
  for (let e = error; e instanceof Error; e = e.cause)
    if (!messages.at(-1)?.includes(e.message)) messages.push(e.message);
  return messages.join(': ') || String(error);
}

/** One sweep: what it waits on, so a sweep cut off at its bound names what did not answer. */
class SweepProgress {
  waitingOn: SweepDependency = 'temporal visibility';
  cutOff = false;

  /** Awaits `work`, blaming `dependency` if it fails; a blame made further in stands. */
  async blame<T>(dependency: SweepDependency, work: Promise<T>): Promise<T> {
    const outer = this.waitingOn;
    this.waitingOn = dependency;
    try {
      return await work;
    } catch (error) {
      throw error instanceof SweepFailure ? error : new SweepFailure(dependency, error);
    } finally {
      this.waitingOn = outer;
    }
  }
}

/**
 * Runs one sweep within SWEEP_BOUND_MS. Its Temporal calls carry the deadline (the app's
 * NativeConnection ignores an AbortSignal), and the sweep fails at the bound whatever it waits on,
 * so a call that never answers cannot hold the next sweeps back.
 */
async function withinBound(client: Client, sweep: (progress: SweepProgress) => Promise<void>) {
  const progress = new SweepProgress();
  const deadline = Date.now() + SWEEP_BOUND_MS;
  const noAnswer = (dependency: SweepDependency) =>
    new SweepFailure(dependency, new Error(`no answer within ${SWEEP_BOUND_MS / 1000} s`));
  const work = client.withDeadline(deadline, () => progress.blame('temporal visibility', sweep(progress)));
  try {
    await pTimeout(work, {
      milliseconds: SWEEP_BOUND_MS,
      fallback: () => {
        progress.cutOff = true;
        throw noAnswer(progress.waitingOn);
      },
    });
  } catch (error) {
    // The SDK's own "Timeout expired" at the deadline may come just before the timer: the same cut-off.
    if (error instanceof SweepFailure && Date.now() >= deadline) throw noAnswer(error.dependency);
    throw error;
  }
}

/**
 * A terminated run runs no more workflow code, so it cannot dead-letter its message itself (a
 * cancelled one does). This loop finds IngestTransaction runs an operator terminated (visibility,
 * by close time) and dead-letters each one's message, read from the run's input, with code
 * `terminated`, once: balance_sync_terminated_runs records it in the transaction that publishes it.
 * A run whose row was written before the terminate is only marked. A failed sweep counts in
 * `dead_letter_publish_failures_total{code="terminated"}` and warns with the dependency and how long
 * sweeps have failed; so does a sweep with no answer within SWEEP_BOUND_MS. The next sweep re-reads
 * what a failed one missed: the newest close time seen counts only once a sweep has read them all.
 */
export function watchTerminatedRuns(options: TerminatedRunsOptions, deps: TerminatedRunsDeps) {
  const intervalMs = options.intervalMs ?? TERMINATED_RUNS_INTERVAL_MS;
  let since: Date | undefined;
  let running: Promise<void> | undefined;
  let failing: { since: number; sweeps: number } | undefined;
  const sweep = async (progress: SweepProgress) => {
    const from = since ? new Date(since.getTime() - OVERLAP_MS) : undefined;
    const query = [
      `WorkflowType = 'IngestTransaction'`,
      `ExecutionStatus = 'Terminated'`,
      `TaskQueue = ${JSON.stringify(options.taskQueue)}`,
      ...(from ? [`CloseTime > ${JSON.stringify(from.toISOString())}`] : []),
    ].join(' AND ');
    let newest = since;
    for await (const run of deps.client.workflow.list({ query })) {
      if (progress.cutOff) return; // failed at its bound: the next sweep re-reads the rest
      if (run.closeTime && (!newest || run.closeTime > newest)) newest = run.closeTime;
      const read = () => readTerminatedRun(deps.client, run.workflowId, run.runId);
      await progress.blame('postgres', deadLetterOnce(run, 'terminated', read, deps, progress));
    }
    since = newest;
    const vanished = await findVanishedRuns(options.taskQueue, {
      ...deps,
      readOriginal: async (workflowId, runId) =>
        (await readTerminatedRun(deps.client, workflowId, runId)).original,
      cutOff: () => progress.cutOff,
    });
    for (const run of vanished) {
      if (progress.cutOff) return;
      const read = () => Promise.resolve({ original: run.original, why: 'deleted from Temporal' });
      await progress.blame('postgres', deadLetterOnce(run, 'deleted', read, deps, progress, forgetRun));
    }
  };
  const succeeded = () => {
    if (failing) deps.log.info({ failedSweeps: failing.sweeps }, 'terminated runs are dead-lettered again');
    failing = undefined;
  };
  const failed = (error: unknown, startedAt: number) => {
    const { dependency, message } =
      error instanceof SweepFailure ? error : new SweepFailure('temporal visibility', error);
    failing = { since: failing?.since ?? startedAt, sweeps: (failing?.sweeps ?? 0) + 1 };
    const failingForSeconds = Math.round((Date.now() - failing.since) / 1000);
    deps.metrics.deadLetterPublishFailures.inc({ code: 'terminated' });
    deps.log.warn(
      { code: 'terminated', dependency, err: message, failedSweeps: failing.sweeps, failingForSeconds },
      `cannot dead-letter terminated runs: ${dependency} failing for ${failingForSeconds} s; retrying every ${intervalMs / 1000} s`,
    );
  };
  const tick = () => {
    if (running) return;
    const startedAt = Date.now();
    running = withinBound(deps.client, sweep)
      .then(succeeded, (error: unknown) => failed(error, startedAt))
      .finally(() => (running = undefined));
  };
  const timer = setInterval(tick, intervalMs);
  tick();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}

/** The run's input and the operator's reason, from its history. */
async function readTerminatedRun(client: Client, workflowId: string, runId: string) {
  const { events, input } = await readIngestRun(client, workflowId, runId);
  return {
    original: input?.original,
    why: events.at(-1)?.workflowExecutionTerminatedEventAttributes?.reason || 'no reason given',
  };
}

/**
 * Dead-letters a run's message with `code` (terminated, deleted) unless its row was written, once
 * across instances: the claim and the publish share one transaction, and so does `also`.
 */
async function deadLetterOnce(
  { workflowId, runId }: { workflowId: string; runId: string },
  code: 'terminated' | 'deleted',
  read: () => Promise<{ original: OriginalMessage | undefined; why: string }>,
  deps: TerminatedRunsDeps,
  progress: SweepProgress,
  also?: (db: pg.PoolClient, run: { workflowId: string; runId: string }) => Promise<void>,
): Promise<void> {
  const db = await deps.pool.connect();
  try {
    await db.query('BEGIN');
    const claimed = (await db.query(CLAIM, [workflowId, runId])).rowCount;
    if (!claimed) {
      // Dead-lettered already (as terminated, or by another instance): only `also` is left to do.
      await also?.(db, { workflowId, runId });
      await db.query('COMMIT');
      return;
    }
    const recorded = (await db.query(RECORDED, [workflowId])).rowCount;
    const { original, why } = await progress.blame('temporal history', read());
    if (!recorded && original) {
      const reason = `the IngestTransaction run was ${code} before its row was written: ${why}`;
      await progress.blame(
        'rabbitmq',
        publishOriginal(deps.publisher, { original, code, reason, workflowId }),
      );
      deps.metrics.messagesDeadLettered.inc({ code });
      deps.log.warn({ workflowId, runId, code }, `${code} run dead-lettered`);
    }
    await also?.(db, { workflowId, runId });
    await db.query('COMMIT');
  } catch (error) {
    await db.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    db.release();
  }
}
