import { Client } from '@temporalio/client';
import type { NativeConnection } from '@temporalio/worker';
import type { Logger } from 'pino';
import type pg from 'pg';
import { createActivities, type Activities } from './activities/index.js';
import { startBridge, type Bridge } from './bridge/bridge.js';
import { ProviderDirectory } from './bridge/provider-directory.js';
import { watchTerminatedRuns } from './bridge/terminated-runs.js';
import { portInUseError, redactUrl, type Config } from './config.js';
import { createHealth, type Health, type HealthOptions } from './health.js';
import { balancesAt } from './history/balance-history.js';
import { startHttpServer } from './http/server.js';
import { IngestOutages } from './ingest-outages.js';
import { createKeydbClient, keydbAnswers } from './keydb/client.js';
import { createMetrics, type AppMetrics } from './metrics.js';
import { createPool } from './postgres/pools.js';
import { migrate } from './postgres/schema.js';
import { connectToRabbitmq, countLostConnections, watchBlocked } from './rabbitmq/connection.js';
import { createDeadLetterPublisher } from './rabbitmq/dead-letters.js';
import { waitForProducerTables } from './postgres/wait-for-tables.js';
import { ensureSchedules, type ScheduleSettings } from './schedules/schedules.js';
import { startSyncWatch, type SyncWatchOptions } from './schedules/sync-watch.js';
import { connectToTemporal } from './temporal-connection.js';
import { createWorker } from './worker.js';

export interface App {
  httpPort: number;
  client: Client;
  /** Graceful stop: consuming first, then in-flight starts, the worker, then every connection. */
  stop(): Promise<void>;
  /** Settles when the worker stops; rejects if it fails. */
  done: Promise<void>;
}

/** What /readyz reports: the start-up step being waited on, then the health checks' last round. */
interface Startup {
  waitingFor: string;
  health?: Health;
}

/** Timing of the health checks and the sync watch; tests shorten them. */
export interface AppOptions {
  health?: HealthOptions;
  syncWatch?: SyncWatchOptions;
}

/** The readiness checks the sync watch names as causes of a stopped sync. */
const SYNC_CHECKS = ['keydb', 'postgres', 'temporal', 'worker'];

/**
 * Starts the whole service in this process: the HTTP endpoints first, then migrations, two workers
 * (IngestTransaction on the ingest task queue; SyncBalances and ReconcileBalances on the sync one),
 * the schedules, the start-up reconciliation, and last the RabbitMQ bridge.
 */
export async function startApp(
  config: Config,
  log: Logger,
  metrics: AppMetrics = createMetrics(),
  options: AppOptions = {},
): Promise<App> {
  log.info(
    {
      postgres: redactUrl(config.DATABASE_URL),
      keydb: redactUrl(config.KEYDB_URL),
      rabbitmq: redactUrl(config.RABBITMQ_URL),
      temporal: config.TEMPORAL_ADDRESS,
      taskQueue: config.TEMPORAL_TASK_QUEUE,
    },
    'starting balance-sync',
  );
  // The HTTP endpoints come first: /healthz answers from the first second, and /readyz says what
  // start-up is waiting for (the waits below can last STARTUP_WAIT_SECONDS).
  const startup: Startup = { waitingFor: 'postgres' };
  // GET /balances has a pool of its own, so a dispute query never waits behind the sync or ingest.
  const historyPool = config.BALANCES_API_TOKEN
    ? createPool(config.DATABASE_URL, 'history', (error) =>
        log.warn({ err: error.message }, 'idle Postgres client failed'),
      )
    : undefined;
  const http = await startHttp(config, metrics, startup, historyPool);
  log.info({ port: http.port }, 'http endpoints ready');

  const outages = new IngestOutages(metrics);
  const stores = openStores(config, log);
  const { pool, keydb } = stores;
  await waitForProducerTables(pool, log, config.STARTUP_WAIT_SECONDS);
  const { installedTriggers } = await migrate(pool);
  if (installedTriggers) log.info('balance triggers installed and running sums computed');

  startup.waitingFor = 'temporal';
  const { connection, namespace } = await connectToTemporal(config, log);
  const client = new Client({ connection, namespace });

  startup.waitingFor = 'worker';
  const rabbitmqName = `balance-sync bridge ${config.TEMPORAL_TASK_QUEUE}`;
  const heartbeat = config.RABBITMQ_HEARTBEAT_SECONDS;
  const rabbitmq = connectToRabbitmq(config.RABBITMQ_URL, rabbitmqName, log, heartbeat);
  // Dead letters go out on their own connection: a resource alarm blocks it, never the consumer's acks.
  const publishing = connectToRabbitmq(config.RABBITMQ_URL, `${rabbitmqName} publishing`, log, heartbeat);
  countLostConnections({ consuming: rabbitmq, publishing }, metrics);
  const rabbitmqBlocked = watchBlocked([rabbitmq, publishing], { metrics, log });
  const deadLetters = createDeadLetterPublisher(publishing, config.DEAD_LETTER_QUEUE, { log });
  // The bridge starts after the workers: until then a minute written has no hold of ingest to end.
  let minuteWritten = (_minute: Date) => undefined as void;
  // The sync watch starts last: until its first look the schedule counts as running.
  let syncPaused = () => false;
  const activities = createActivities({
    ...stores,
    metrics,
    deadLetters,
    outages,
    balanceHistoryDays: config.BALANCE_HISTORY_DAYS,
    onMinuteWritten: (minute) => minuteWritten(minute),
  });
  const { workers, done } = await startWorkers(config, { connection, namespace }, activities, log);

  startup.waitingFor = 'schedules';
  const scheduleSettings = await startSchedules(config, client, log);

  const bridge: Bridge = startBridge(
    {
      incomingQueue: config.INCOMING_QUEUE,
      deadLetterQueue: config.DEAD_LETTER_QUEUE,
      prefetch: config.BRIDGE_PREFETCH,
      maxMessageBytes: config.MAX_MESSAGE_BYTES,
      taskQueue: config.TEMPORAL_TASK_QUEUE,
      eagerStart: config.BRIDGE_EAGER_START,
      maxInFlight: config.BRIDGE_MAX_IN_FLIGHT,
      summaryIntervalMs: config.INGEST_SUMMARY_SECONDS * 1000,
      holdForSyncLeadMs: config.BRIDGE_HOLD_FOR_SYNC ? config.SYNC_LEAD_SECONDS * 1000 : undefined,
    },
    {
      connection: rabbitmq,
      publishing,
      deadLetters,
      client,
      providers: new ProviderDirectory(pool),
      metrics,
      log,
      outages,
      syncPaused: () => syncPaused(),
    },
  );

  minuteWritten = (minute) => bridge.minuteWritten(minute);

  const terminatedRuns = watchTerminatedRuns(
    { taskQueue: config.TEMPORAL_TASK_QUEUE },
    { client, pool, publisher: deadLetters, metrics, log },
  );

  const health = createHealth(metrics, log, options.health);
  health.add('rabbitmq', () => (bridge.isConsuming() ? undefined : 'not consuming'), 'rabbitmq');
  health.add('rabbitmqUnblocked', () => (rabbitmqBlocked() ? 'blocked by a resource alarm' : undefined));
  health.add(
    'deadLetterQueue',
    () => deadLetters.refusal() ?? (bridge.deadLettersAccepted() ? undefined : 'refusing dead letters'),
  );
  health.add('worker', () => workers.find((w) => w.getState() !== 'RUNNING')?.getState());
  // An outage the ingest path is retrying (a revoked grant, a read-only database, an expired API key)
  // fails its dependency's check even while a ping still answers, and /readyz says why.
  health.add(
    'temporal',
    async () => outages.reasons().temporal ?? void (await connection.healthService.check({})),
    'temporal',
  );
  health.add(
    'postgres',
    async () => outages.reasons().postgres ?? void (await pool.query('SELECT 1')),
    'postgres',
  );
  health.add('keydb', () => keydbAnswers(keydb), 'keydb');
  await health.start();
  startup.health = health;
  const watch = startSyncWatch(
    {
      client,
      pool,
      settings: scheduleSettings,
      metrics,
      log,
      failingChecks: () =>
        Object.fromEntries(
          Object.entries(health.state()?.reasons ?? {}).filter(([check]) => SYNC_CHECKS.includes(check)),
        ),
    },
    options.syncWatch,
  );
  syncPaused = watch.syncPaused;

  let stopping: Promise<void> | undefined;
  return {
    httpPort: http.port,
    client,
    done,
    stop() {
      stopping ??= (async () => {
        await Promise.all([watch.stop(), health.stop()]);
        await bridge.stop();
        await terminatedRuns.stop();
        for (const worker of workers) if (worker.getState() === 'RUNNING') worker.shutdown();
        await done.catch(() => undefined);
        await deadLetters.close().catch(() => undefined);
        await rabbitmq.close().catch(() => undefined);
        await publishing.close().catch(() => undefined);
        await new Promise((resolve) => http.server.close(resolve));
        await connection.close();
        await stores.close();
        await historyPool?.end();
        log.info('stopped');
      })();
      return stopping;
    },
  };
}

async function startHttp(config: Config, metrics: AppMetrics, startup: Startup, historyPool?: pg.Pool) {
  const token = config.BALANCES_API_TOKEN;
  return await startHttpServer(config.HTTP_PORT, {
    host: config.HTTP_HOST,
    balances:
      token && historyPool
        ? { token, balancesAt: (at: Date, key?: string) => balancesAt(historyPool, at, key) }
        : undefined,
    registry: metrics.registry,
    temporalMetricsUrl: config.TEMPORAL_METRICS_PORT
      ? `http://127.0.0.1:${config.TEMPORAL_METRICS_PORT}/metrics`
      : undefined,
    readiness: () => startup.health?.state() ?? { waitingFor: startup.waitingFor },
  }).catch((error: unknown) => {
    if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE')
      throw portInUseError('HTTP_PORT', config.HTTP_PORT);
    throw error;
  });
}

/** The Postgres pools (ingest, sync, reconcile: each job its own) and the KeyDB client. */
function openStores(config: Config, log: Logger) {
  const onIdleError = (error: Error) => log.warn({ err: error.message }, 'idle Postgres client failed');
  const pool = createPool(config.DATABASE_URL, 'ingest', onIdleError);
  const syncPool = createPool(config.DATABASE_URL, 'sync', onIdleError);
  const reconcilePool = createPool(config.DATABASE_URL, 'reconcile', onIdleError);
  const keydb = createKeydbClient(config.KEYDB_URL, log);
  return {
    pool,
    syncPool,
    reconcilePool,
    keydb,
    async close() {
      await Promise.all([pool.end(), syncPool.end(), reconcilePool.end()]);
      keydb.disconnect();
    },
  };
}

/**
 * Two workers in this one process, with the same workflows and activities: ingest on the main task
 * queue, the schedules' runs on their own, so a minute's sync never waits behind an ingest backlog.
 */
async function startWorkers(
  config: Config,
  temporal: { connection: NativeConnection; namespace: string },
  activities: Activities,
  log: Logger,
) {
  const workers = await Promise.all(
    [config.TEMPORAL_TASK_QUEUE, config.TEMPORAL_SYNC_TASK_QUEUE].map((taskQueue) =>
      createWorker({
        ...temporal,
        taskQueue,
        activities,
        workflowBundlePath: config.WORKFLOW_BUNDLE_PATH || undefined,
        // More workflow-task slots than in-flight starts keeps eager starts eager (docs/BENCHMARKS.md).
        tuning: {
          maxConcurrentWorkflowTaskExecutions: config.WORKER_MAX_WORKFLOW_TASKS,
          maxConcurrentLocalActivityExecutions: config.WORKER_MAX_LOCAL_ACTIVITIES,
        },
      }),
    ),
  );
  const done = Promise.all(workers.map((worker) => worker.run())).then(() => undefined);
  done.catch((error: unknown) =>
    log.error({ err: (error as Error).message }, 'worker stopped with an error'),
  );
  return { workers, done };
}

/** Creates or updates both schedules, then runs the start-up reconciliation. */
async function startSchedules(config: Config, client: Client, log: Logger): Promise<ScheduleSettings> {
  const settings = {
    taskQueue: config.TEMPORAL_SYNC_TASK_QUEUE,
    syncScheduleId: config.SYNC_SCHEDULE_ID,
    syncLeadSeconds: config.SYNC_LEAD_SECONDS,
    reconcileScheduleId: config.RECONCILE_SCHEDULE_ID,
    reconcileCron: config.RECONCILE_CRON,
  };
  const schedules = await ensureSchedules(client, settings, log);
  log.info({ schedules }, 'schedules ready');
  await client.workflow.start('ReconcileBalances', {
    taskQueue: config.TEMPORAL_SYNC_TASK_QUEUE,
    workflowId: `${config.RECONCILE_SCHEDULE_ID}-startup`,
    workflowIdConflictPolicy: 'USE_EXISTING',
    workflowIdReusePolicy: 'ALLOW_DUPLICATE',
  });
  return settings;
}
