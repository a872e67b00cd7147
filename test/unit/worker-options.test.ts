import { Worker, type NativeConnection, type WorkerOptions } from '@temporalio/worker';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Activities } from '../../src/activities/index.js';
import { createWorker } from '../../src/worker.js';

/** The options createWorker hands the SDK, with Worker.create faked (no server, no bundle). */
async function optionsFor(settings: Partial<Parameters<typeof createWorker>[0]>): Promise<WorkerOptions> {
  const create = vi.spyOn(Worker, 'create').mockResolvedValue({} as Worker);
  await createWorker({
    connection: {} as NativeConnection,
    namespace: 'default',
    taskQueue: 'q',
    activities: {} as Activities,
    workflowBundlePath: '/dev/null',
    ...settings,
  });
  return create.mock.lastCall![0];
}

afterEach(() => vi.restoreAllMocks());

describe('createWorker', () => {
  it('caches as many workflow runs as it has workflow-task slots, so the SDK cannot cut the slots to its heap-sized cache', async () => {
    const options = await optionsFor({
      tuning: { maxConcurrentWorkflowTaskExecutions: 200, maxConcurrentLocalActivityExecutions: 200 },
    });
    expect(options.maxConcurrentWorkflowTaskExecutions).toBe(200);
    expect(options.maxCachedWorkflows).toBe(200);
  });

  it("leaves the SDK's cache alone without a slot count, and for an activities-only worker", async () => {
    expect(await optionsFor({})).not.toHaveProperty('maxCachedWorkflows');
    const activitiesOnly = await optionsFor({
      activitiesOnly: true,
      tuning: { maxConcurrentWorkflowTaskExecutions: 200 },
    });
    expect(activitiesOnly).not.toHaveProperty('maxCachedWorkflows');
    expect(activitiesOnly).not.toHaveProperty('workflowBundle');
  });
});
