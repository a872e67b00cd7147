// A bench-only assembly of the service's pieces (src/main.ts + src/app.ts without HTTP), so that
// `npm run bench:sync-precision -- --variant shared|split` can compare the two task-queue layouts
// whatever src/app.ts currently does:
//   BENCH_QUEUE_LAYOUT=shared  SyncBalances/ReconcileBalances on the ingest task queue (before 92464e3)
//   BENCH_QUEUE_LAYOUT=split   on their own queue, TEMPORAL_SYNC_TASK_QUEUE, with a second worker
// Same environment variables as the service otherwise.
import { Client } from '@temporalio/client';
import { Runtime } from '@temporalio/worker';
import pg from 'pg';
import { createActivities } from '../src/activities/index.js';
import { connectToRabbitmq } from '../src/rabbitmq/connection.js';
import { startBridge } from '../src/bridge/bridge.js';
import { ProviderDirectory } from '../src/bridge/provider-directory.js';
import { createKeydbClient } from '../src/keydb/client.js';
import { loadConfig } from '../src/config.js';
import { createLogger, temporalLogger } from '../src/logger.js';
import { createMetrics } from '../src/metrics.js';
import { migrate } from '../src/postgres/schema.js';
import { ensureSchedules } from '../src/schedules/schedules.js';
import { connectToTemporal } from '../src/temporal-connection.js';
import { createWorker } from '../src/worker.js';

const config = loadConfig();
const log = createLogger(config.LOG_LEVEL);
Runtime.install({ logger: temporalLogger(log), shutdownSignals: [] });
const layout = process.env.BENCH_QUEUE_LAYOUT === 'shared' ? 'shared' : 'split';
log.info({ layout }, 'starting balance-sync (bench assembly)');

const pool = new pg.Pool({ connectionString: config.DATABASE_URL, max: 10 });
pool.on('error', (error) => log.warn({ err: error.message }, 'idle Postgres client failed'));
const keydb = createKeydbClient(config.KEYDB_URL, log);
const metrics = createMetrics();
await migrate(pool);

const { connection, namespace } = await connectToTemporal(config, log);
const client = new Client({ connection, namespace });
const activities = createActivities({ pool, keydb, metrics });
const ingestQueue = config.TEMPORAL_TASK_QUEUE;
const syncQueue = layout === 'shared' ? ingestQueue : config.TEMPORAL_SYNC_TASK_QUEUE;
const workers = await Promise.all(
  [...new Set([ingestQueue, syncQueue])].map((taskQueue) =>
    createWorker({
      connection,
      namespace,
      taskQueue,
      activities,
      workflowBundlePath: config.WORKFLOW_BUNDLE_PATH || undefined,
      tuning: {
        maxConcurrentWorkflowTaskExecutions: config.WORKER_MAX_WORKFLOW_TASKS,
        maxConcurrentLocalActivityExecutions: config.WORKER_MAX_LOCAL_ACTIVITIES,
      },
    }),
  ),
);
const running = workers.map((worker) => worker.run());

await ensureSchedules(
  client,
  {
    taskQueue: syncQueue,
    syncScheduleId: config.SYNC_SCHEDULE_ID,
    syncLeadSeconds: config.SYNC_LEAD_SECONDS,
    reconcileScheduleId: config.RECONCILE_SCHEDULE_ID,
    reconcileCron: config.RECONCILE_CRON,
  },
  log,
);
log.info('schedules ready');

const bridge = startBridge(
  {
    incomingQueue: config.INCOMING_QUEUE,
    deadLetterQueue: config.DEAD_LETTER_QUEUE,
    prefetch: config.BRIDGE_PREFETCH,
    maxMessageBytes: config.MAX_MESSAGE_BYTES,
    taskQueue: ingestQueue,
    eagerStart: config.BRIDGE_EAGER_START,
    maxInFlight: config.BRIDGE_MAX_IN_FLIGHT,
    summaryIntervalMs: config.INGEST_SUMMARY_SECONDS * 1000,
  },
  {
    connection: connectToRabbitmq(
      config.RABBITMQ_URL,
      `balance-sync bridge ${ingestQueue}`,
      log,
      config.RABBITMQ_HEARTBEAT_SECONDS,
    ),
    client,
    providers: new ProviderDirectory(pool),
    metrics,
    log,
  },
);

process.once('SIGTERM', () => {
  void (async () => {
    await bridge.stop();
    for (const worker of workers) worker.shutdown();
    await Promise.allSettled(running);
    await connection.close();
    await pool.end();
    keydb.disconnect();
    process.exit(0);
  })();
});
