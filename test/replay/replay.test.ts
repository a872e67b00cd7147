import type { HistoryAndWorkflowId } from '@temporalio/client';
import { Worker } from '@temporalio/worker';
import { readFileSync, readdirSync } from 'node:fs';
import { describe, expect, inject, it } from 'vitest';
import { installQuietRuntime } from '../support/harness.js';

/**
 * Replays histories recorded from a dev server (test/replay/*.json, `npm run replay:record`) against
 * today's workflow bundle. A change that alters the commands a workflow issues fails here: guard it
 * with `patched()` (docs/DESIGN.md, Tests) so workflows already in flight still replay.
 */
const DIR = new URL('./', import.meta.url);
const RECORDED = readdirSync(DIR)
  .filter((file) => file.endsWith('.json'))
  .sort();

export function loadHistories(): HistoryAndWorkflowId[] {
  return RECORDED.map((file) => ({
    workflowId: file.replace(/\.json$/, ''),
    // The JSON `temporal workflow show --output json` prints; the replayer converts it.
    history: JSON.parse(readFileSync(new URL(file, DIR), 'utf8')) as unknown,
  }));
}

describe('recorded workflow histories', () => {
  it('cover every workflow type, a failed ingest, an off-minute sync and a minute raced by two writers', () => {
    // Older recordings kept under other names (docs/DESIGN.md, Tests) replay too.
    expect(RECORDED).toEqual(
      expect.arrayContaining([
        'ingest-transaction-ok.json',
        'ingest-transaction-unknown-provider.json',
        'reconcile-balances-startup.json',
        'sync-balances-off-minute.json',
        'sync-balances-on-minute.json',
        'sync-balances-racing-writers.json',
      ]),
    );
  });

  it('replay without a nondeterminism error on the current workflow code', async () => {
    installQuietRuntime();
    const results = [];
    for await (const result of Worker.runReplayHistories(
      { workflowBundle: { codePath: inject('workflowBundlePath') } },
      loadHistories(),
    ))
      results.push({ workflowId: result.workflowId, error: result.error?.message });
    expect(results).toEqual(
      RECORDED.map((file) => ({ workflowId: file.replace(/\.json$/, ''), error: undefined })),
    );
  });
});
