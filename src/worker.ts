import { Worker, type NativeConnection, type WorkerOptions } from '@temporalio/worker';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Activities } from './activities/index.js';
import { SYNC_HEARTBEAT_INTERVAL_MS } from './sync-timing.js';

export interface WorkerSettings {
  connection: NativeConnection;
  namespace: string;
  taskQueue: string;
  activities: Activities;
  /** A prebuilt bundle (npm run build); without one the worker bundles the sources at start-up. */
  workflowBundlePath?: string;
  /** Poll activity tasks only (an instance's own sync queue, src/keydb/sync-instances.ts). */
  activitiesOnly?: boolean;
  tuning?: Pick<
    WorkerOptions,
    | 'maxConcurrentWorkflowTaskExecutions'
    | 'maxConcurrentActivityTaskExecutions'
    | 'maxConcurrentLocalActivityExecutions'
  >;
}

/**
 * Shutdown fits compose's 30 s stop_grace_period (docs/OPERATIONS.md, Stopping): after the bridge's 15 s, a
 * worker waits 3 s for tasks to finish, then cancels activities, and gives up at 8 s (an insert stuck
 * in Postgres cannot hold it; Temporal retries that run elsewhere). main.ts exits at 27 s regardless.
 */
export const WORKER_SHUTDOWN_GRACE_MS = 3_000;
export const WORKER_SHUTDOWN_FORCE_MS = 8_000;

export const DEFAULT_BUNDLE_PATH = fileURLToPath(new URL('../workflow-bundle.js', import.meta.url));

/** One worker polling one task queue, with every workflow type (unless activitiesOnly) and activity registered. */
export async function createWorker(settings: WorkerSettings): Promise<Worker> {
  const bundlePath =
    settings.workflowBundlePath || (existsSync(DEFAULT_BUNDLE_PATH) ? DEFAULT_BUNDLE_PATH : undefined);
  return await Worker.create({
    connection: settings.connection,
    namespace: settings.namespace,
    taskQueue: settings.taskQueue,
    activities: settings.activities,
    ...(settings.activitiesOnly
      ? {}
      : bundlePath
        ? { workflowBundle: { codePath: bundlePath } }
        : { workflowsPath: fileURLToPath(new URL('./workflows/index.js', import.meta.url)) }),
    // publishBalances heartbeats every 300 ms with a 1.5 s timeout; the SDK's default throttle (80% of
    // the timeout) would send only every 1.2 s and leave a live worker's attempt 0.3 s of slack.
    maxHeartbeatThrottleInterval: SYNC_HEARTBEAT_INTERVAL_MS,
    shutdownGraceTime: WORKER_SHUTDOWN_GRACE_MS,
    shutdownForceTime: WORKER_SHUTDOWN_FORCE_MS,
    ...settings.tuning,
    // The SDK sizes the workflow cache from V8's heap limit (114 runs at npm start's 384 MiB) and
    // silently cuts the workflow-task slots down to it; an IngestTransaction holds a slot and a cache
    // entry from its eager start to its completion, so the cache holds as many runs as there are slots.
    ...(settings.tuning?.maxConcurrentWorkflowTaskExecutions && !settings.activitiesOnly
      ? { maxCachedWorkflows: settings.tuning.maxConcurrentWorkflowTaskExecutions }
      : {}),
  });
}
