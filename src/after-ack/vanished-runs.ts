import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type pg from 'pg';
import type { OriginalMessage } from '../activities/index.js';

/** An IngestTransaction still running after this long is watched: its message is kept until it closes. */
export const WATCH_AFTER_MS = 10_000;

const WATCHED = `SELECT workflow_id, run_id, original FROM balance_sync_watched_runs`;
const WATCH = `
  INSERT INTO balance_sync_watched_runs (workflow_id, run_id, original) VALUES ($1, $2, $3)
  ON CONFLICT DO NOTHING`;
const UNWATCH = `DELETE FROM balance_sync_watched_runs WHERE workflow_id = $1 AND run_id = $2`;
// A run whose row was written has nothing to lose: forgotten without asking Temporal.
const UNWATCH_RECORDED = `
  DELETE FROM balance_sync_watched_runs w USING balance_sync_ingest_ledger l
  WHERE l.ingest_key = w.workflow_id`;

/** A run to look at, and the message it carries. */
export interface WatchedRun {
  workflowId: string;
  runId: string;
  original: OriginalMessage;
}

export interface VanishedRunsDeps {
  client: Client;
  pool: pg.Pool;
  /** Reads a run's original message from its history (undefined for inputs without one). */
  readOriginal(workflowId: string, runId: string): Promise<OriginalMessage | undefined>;
  /** True once the sweep is past its bound: stop, the next sweep goes on. */
  cutOff(): boolean;
}

/**
 * `temporal workflow delete` removes a running IngestTransaction and with it the only copy of a
 * message already acked. So every run still running WATCH_AFTER_MS after its start has its message
 * kept in balance_sync_watched_runs (a run that slow is waiting on an outage, when an operator may
 * reach for delete). Each sweep forgets the runs whose row was written, watches the new ones, then
 * returns the watched runs Temporal no longer knows (deleted), and forgets those that closed: a
 * closed run dead-letters its own message (failed, cancelled) or the terminated-runs sweep does.
 * The caller forgets a vanished run (forgetRun) once it has handled it, or found it handled. Not
 * caught: a run deleted before any sweep saw it running that long. Taken for deleted: a watched run
 * that closed and outlived the namespace's retention before a sweep saw it closed (the app down that
 * long); its dead letter carries its workflow ID, so a replay records one row.
 */
export async function findVanishedRuns(taskQueue: string, deps: VanishedRunsDeps): Promise<WatchedRun[]> {
  await deps.pool.query(UNWATCH_RECORDED);
  const watched = (
    await deps.pool.query<{ workflow_id: string; run_id: string; original: OriginalMessage }>(WATCHED)
  ).rows.map((row) => ({ workflowId: row.workflow_id, runId: row.run_id, original: row.original }));
  const known = new Set(watched.map((run) => `${run.workflowId}/${run.runId}`));
  const query = [
    `WorkflowType = 'IngestTransaction'`,
    `ExecutionStatus = 'Running'`,
    `TaskQueue = ${JSON.stringify(taskQueue)}`,
    `StartTime < ${JSON.stringify(new Date(Date.now() - WATCH_AFTER_MS).toISOString())}`,
  ].join(' AND ');
  for await (const run of deps.client.workflow.list({ query })) {
    if (deps.cutOff()) return [];
    if (known.has(`${run.workflowId}/${run.runId}`)) continue;
    const original = await deps.readOriginal(run.workflowId, run.runId).catch((error: unknown) => {
      // Listed by visibility, already gone (deleted): nothing left to watch.
      if (error instanceof WorkflowNotFoundError) return undefined;
      throw error;
    });
    if (original) await deps.pool.query(WATCH, [run.workflowId, run.runId, original]);
  }
  const vanished: WatchedRun[] = [];
  for (const run of watched) {
    if (deps.cutOff()) break;
    const status = await statusOf(deps.client, run);
    if (status === 'RUNNING') continue;
    if (status === undefined) vanished.push(run);
    else await forgetRun(deps.pool, run);
  }
  return vanished;
}

/** Stops watching a run (it closed, or its vanishing was handled). */
export async function forgetRun(
  db: pg.Pool | pg.PoolClient,
  run: { workflowId: string; runId: string },
): Promise<void> {
  await db.query(UNWATCH, [run.workflowId, run.runId]);
}

/** The run's status name, or undefined when Temporal no longer has it. */
async function statusOf(client: Client, run: WatchedRun): Promise<string | undefined> {
  try {
    return (await client.workflow.getHandle(run.workflowId, run.runId).describe()).status.name;
  } catch (error) {
    if (error instanceof WorkflowNotFoundError) return undefined;
    throw error;
  }
}
