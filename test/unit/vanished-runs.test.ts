import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { findVanishedRuns, type WatchedRun } from '../../src/after-ack/vanished-runs.js';

const original = {
  bodyBase64: Buffer.from('{"id":1,"value":5}').toString('base64'),
  properties: {},
  headers: {},
};

/** Fakes: the watched table as rows, Temporal's running list and each run's status (absent: deleted). */
function fakes(state: {
  watched: { workflow_id: string; run_id: string }[];
  running: { workflowId: string; runId: string }[];
  statuses: Record<string, string>;
  unreadable?: string[];
}) {
  const queries: string[] = [];
  const pool = {
    query: (sql: string, params: unknown[] = []) => {
      queries.push(sql.replace(/\s+/g, ' ').trim());
      if (sql.includes('SELECT workflow_id')) {
        return Promise.resolve({ rows: state.watched.map((row) => ({ ...row, original })), rowCount: 0 });
      }
      if (sql.includes('INSERT INTO balance_sync_watched_runs'))
        state.watched.push({ workflow_id: String(params[0]), run_id: String(params[1]) });
      return Promise.resolve({ rows: [], rowCount: 1 });
    },
  } as unknown as pg.Pool;
  const client = {
    workflow: {
      list: () => ({
        async *[Symbol.asyncIterator]() {
          yield* await Promise.resolve(state.running);
        },
      }),
      getHandle: (workflowId: string) => ({
        describe: () =>
          workflowId in state.statuses
            ? Promise.resolve({ status: { name: state.statuses[workflowId] } })
            : Promise.reject(new WorkflowNotFoundError('not found', workflowId, undefined)),
      }),
    },
  } as unknown as Client;
  const readOriginal = (workflowId: string) =>
    state.unreadable?.includes(workflowId)
      ? Promise.reject(new WorkflowNotFoundError('not found', workflowId, undefined))
      : Promise.resolve(original);
  return { pool, client, readOriginal, queries };
}

describe('findVanishedRuns', () => {
  it('returns a watched run Temporal no longer knows, keeps a running one, and forgets a closed one', async () => {
    const { pool, client, readOriginal, queries } = fakes({
      watched: [
        { workflow_id: 'ingest-deleted', run_id: 'r1' },
        { workflow_id: 'ingest-running', run_id: 'r2' },
        { workflow_id: 'ingest-completed', run_id: 'r3' },
      ],
      running: [],
      statuses: { 'ingest-running': 'RUNNING', 'ingest-completed': 'COMPLETED' },
    });
    const vanished = await findVanishedRuns('tq', { pool, client, readOriginal, cutOff: () => false });
    expect(vanished.map((run: WatchedRun) => run.workflowId)).toEqual(['ingest-deleted']);
    expect(vanished[0]?.original).toEqual(original);
    const forgotten = queries.filter((sql) => sql.startsWith('DELETE FROM balance_sync_watched_runs WHERE'));
    expect(forgotten).toHaveLength(1);
  });

  it('first forgets every watched run whose row was written (the ledger has its workflow ID)', async () => {
    const { pool, client, readOriginal, queries } = fakes({ watched: [], running: [], statuses: {} });
    await findVanishedRuns('tq', { pool, client, readOriginal, cutOff: () => false });
    expect(queries[0]).toMatch(/DELETE FROM balance_sync_watched_runs w USING balance_sync_ingest_ledger/);
  });

  it('watches a new long-running run, and skips one visibility lists but Temporal already deleted', async () => {
    const state = {
      watched: [] as { workflow_id: string; run_id: string }[],
      running: [
        { workflowId: 'ingest-slow', runId: 'r1' },
        { workflowId: 'ingest-gone', runId: 'r2' },
      ],
      statuses: {},
      unreadable: ['ingest-gone'],
    };
    const { pool, client, readOriginal } = fakes(state);
    await findVanishedRuns('tq', { pool, client, readOriginal, cutOff: () => false });
    expect(state.watched.map((row) => row.workflow_id)).toEqual(['ingest-slow']);
  });

  it('stops at the sweep bound: no run is watched or returned once cut off', async () => {
    const state = {
      watched: [{ workflow_id: 'ingest-deleted', run_id: 'r1' }],
      running: [{ workflowId: 'ingest-slow', runId: 'r2' }],
      statuses: {},
    };
    const { pool, client, readOriginal } = fakes(state);
    expect(await findVanishedRuns('tq', { pool, client, readOriginal, cutOff: () => true })).toEqual([]);
    expect(state.watched).toHaveLength(1);
  });
});
