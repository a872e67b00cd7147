// In-process Temporal load: a bench worker (bench + service workflows) and closed-loop starters.
import { Client } from '@temporalio/client';
import {
  bundleWorkflowCode,
  DefaultLogger,
  NativeConnection,
  Runtime,
  Worker,
  type WorkerOptions,
} from '@temporalio/worker';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { createMetrics } from '../../src/metrics.js';
import { createBenchActivities } from './bench-activities.js';
import { progress, summarize, type Summary } from './util.js';

let runtimeInstalled = false;
/** Runtime.install once per process, quiet, without signal handling of its own. */
export function installRuntime(): void {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  Runtime.install({ logger: new DefaultLogger('WARN'), shutdownSignals: [] });
}

let bundle: Promise<{ code: string }> | undefined;
/** The bench workflows (which re-export the service's), bundled once per process. */
export function benchBundle(): Promise<{ code: string }> {
  bundle ??= (async () => {
    const started = performance.now();
    const result = await bundleWorkflowCode({
      workflowsPath: fileURLToPath(new URL('../workflows/index.js', import.meta.url)),
      logger: new DefaultLogger('WARN'),
    });
    progress(`bench workflows bundled in ${Math.round(performance.now() - started)} ms`);
    return result;
  })();
  return bundle;
}

export type Tuning = Pick<
  WorkerOptions,
  | 'maxConcurrentWorkflowTaskExecutions'
  | 'maxConcurrentLocalActivityExecutions'
  | 'maxConcurrentActivityTaskExecutions'
  | 'maxCachedWorkflows'
>;

export interface BenchWorker {
  connection: NativeConnection;
  client: Client;
  taskQueue: string;
  stop(): Promise<void>;
}

/** One NativeConnection shared by a worker and a client, as in the service (eager start needs it). */
export async function startBenchWorker(
  address: string,
  taskQueue: string,
  pool: pg.Pool,
  tuning: Tuning = {},
): Promise<BenchWorker> {
  installRuntime();
  const connection = await NativeConnection.connect({ address });
  const worker = await Worker.create({
    connection,
    taskQueue,
    workflowBundle: await benchBundle(),
    activities: createBenchActivities(pool, createMetrics()),
    ...tuning,
  });
  const running = worker.run();
  const client = new Client({ connection });
  return {
    connection,
    client,
    taskQueue,
    async stop() {
      worker.shutdown();
      await running;
      await connection.close();
    },
  };
}

export interface LoopResult {
  completed: number;
  seconds: number;
  /** Workflows completed per second. */
  rate: number;
  /** Start-to-result latency per workflow, ms. */
  latency: Summary;
  errors: number;
  /** Share of starts the server dispatched eagerly (the first task came back with the start). */
  eagerShare: number;
}

export interface LoopOptions {
  workflowType: string;
  concurrency: number;
  durationMs: number;
  /** At most this many starts in all (the loops end early once they are made). */
  count?: number;
  eager: boolean;
  idPrefix: string;
  args?: (seq: number, workflowId: string) => unknown[];
}

/**
 * `concurrency` loops, each starting a workflow and waiting for its result, until `durationMs` passes
 * or `count` workflows have been started. The rate counts workflows completed over the time until the
 * last loop finished.
 */
export async function closedLoop(worker: BenchWorker, options: LoopOptions): Promise<LoopResult> {
  const latencies: number[] = [];
  let seq = 0;
  let errors = 0;
  let eager = 0;
  const started = performance.now();
  const end = started + options.durationMs;
  const loop = async () => {
    while (performance.now() < end && seq < (options.count ?? Infinity)) {
      const n = seq++;
      const workflowId = `${options.idPrefix}-${n}`;
      const t0 = performance.now();
      try {
        const handle = await worker.client.workflow.start(options.workflowType, {
          taskQueue: worker.taskQueue,
          workflowId,
          args: options.args?.(n, workflowId) ?? [],
          requestEagerStart: options.eager,
          workflowExecutionTimeout: '30 seconds',
        });
        if (handle.eagerlyStarted) eager++;
        await handle.result();
        latencies.push(performance.now() - t0);
      } catch (error) {
        errors++;
        if (errors <= 3) progress(`workflow ${workflowId} failed: ${(error as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, loop));
  const seconds = (performance.now() - started) / 1000;
  return {
    completed: latencies.length,
    seconds,
    rate: latencies.length / seconds,
    latency: summarize(latencies),
    errors,
    eagerShare: eager / (latencies.length + errors || 1),
  };
}

export interface CeilingRow extends LoopResult {
  concurrency: number;
  eager: boolean;
}

/** Empty-workflow rate (start + wait for result) at each concurrency; returns every row and the best. */
export async function measureCeiling(
  worker: BenchWorker,
  options: { concurrencies: number[]; durationMs: number; eager: boolean[]; tag: string },
): Promise<{ rows: CeilingRow[]; best: CeilingRow }> {
  // Warm up: V8 contexts, connections, sticky queues.
  await closedLoop(worker, {
    workflowType: 'BenchEmpty',
    concurrency: 10,
    durationMs: 2000,
    eager: true,
    idPrefix: `${options.tag}-warm`,
  });
  const rows: CeilingRow[] = [];
  for (const eager of options.eager) {
    for (const concurrency of options.concurrencies) {
      const result = await closedLoop(worker, {
        workflowType: 'BenchEmpty',
        concurrency,
        durationMs: options.durationMs,
        eager,
        idPrefix: `${options.tag}-c${concurrency}-${eager ? 'e' : 'n'}`,
      });
      progress(
        `ceiling ${options.tag}: concurrency ${concurrency}, eager ${eager}: ${result.rate.toFixed(1)} wf/s ` +
          `(p50 ${result.latency.p50.toFixed(1)} ms, ${(result.eagerShare * 100).toFixed(0)}% eagerly started)`,
      );
      rows.push({ ...result, concurrency, eager });
    }
  }
  const best = rows.reduce((a, b) => (b.rate > a.rate ? b : a));
  return { rows, best };
}

/** The matching service's view of a workflow task queue: tasks waiting for a worker, and the oldest's age. */
export async function workflowBacklog(
  client: Client,
  taskQueue: string,
): Promise<{ count: number; ageSeconds: number; addRate: number; dispatchRate: number }> {
  const response = await client.workflowService.describeTaskQueue({
    namespace: 'default',
    taskQueue: { name: taskQueue, kind: 1 },
    taskQueueType: 1, // TASK_QUEUE_TYPE_WORKFLOW
    reportStats: true,
  });
  const stats = response.stats;
  return {
    count: Number(stats?.approximateBacklogCount ?? 0),
    ageSeconds: Number(stats?.approximateBacklogAge?.seconds ?? 0),
    addRate: stats?.tasksAddRate ?? 0,
    dispatchRate: stats?.tasksDispatchRate ?? 0,
  };
}

/**
 * The in-flight throttle's query (src/bridge/in-flight-throttle.ts), sent back to back for
 * `durationMs`: how long one count takes on this server, and how many were sent.
 */
export async function countLoop(
  client: Client,
  taskQueue: string,
  durationMs: number,
): Promise<{ counts: number; latency: Summary }> {
  const query = `WorkflowType = 'IngestTransaction' AND ExecutionStatus = 'Running' AND TaskQueue = ${JSON.stringify(taskQueue)}`;
  const latencies: number[] = [];
  const end = performance.now() + durationMs;
  while (performance.now() < end) {
    const t0 = performance.now();
    await client.workflow.count(query);
    latencies.push(performance.now() - t0);
  }
  return { counts: latencies.length, latency: summarize(latencies) };
}
