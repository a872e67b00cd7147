import { Client } from '@temporalio/client';
import { randomUUID } from 'node:crypto';
import type { NativeConnection } from '@temporalio/worker';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type pg from 'pg';
import { createActivities, type Activities } from './activities/index.js';
import { startBridge, type Bridge } from './bridge/bridge.js';
import { ProviderDirectory } from './bridge/provider-directory.js';
import { watchTerminatedRuns } from './after-ack/terminated-runs.js';
import { eagerStartShortfall, portInUseError, redactUrl, type Config } from './config.js';
import { createHealth, type Health, type HealthOptions } from './health.js';
import { balancesAt } from './history/balance-history.js';
import { startHttpServer } from './http/server.js';
import { IngestOutages } from './ingest-outages.js';
import { createKeydbClient, keydbAnswers } from './keydb/client.js';
import { registerInstanceQueue } from './keydb/sync-instances.js';
import { createMetrics, type AppMetrics } from './metrics.js';
import { createPool, type PoolJob } from './postgres/pools.js';
import { migrate } from './postgres/schema.js';
import { connectToRabbitmq, countLostConnections, watchBlocked } from './rabbitmq/connection.js';
import { createConfirmedPublisher } from './rabbitmq/dead-letters.js';
import { Resources } from './resources.js';
import { waitForProducerTables } from './postgres/wait-for-tables.js';
import { ensureSchedules, type ScheduleSettings } from './schedules/schedules.js';
import { startSyncWatch, type SyncWatchOptions } from './schedules/sync-watch.js';
import { SyncHold } from './sync-hold.js';
import { API_KEY_FILE, connectToTemporal, watchApiKeyFile } from './temporal-connection.js';
import { TemporalProbe } from './temporal-probe.js';
import { createWorker } from './worker.js';

export interface App {
  httpPort: number;
  client: Client;
  /**
   * Graceful stop: closes what start-up opened, newest first: the checks, then consuming and the
   * in-flight starts, the workers, then every connection.
   */
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
 * the schedules, the start-up reconciliation, and last the RabbitMQ bridge. Each resource is
 * registered as it opens; if a step fails, those opened are closed, newest first, and startApp
 * rejects with the step's error.
 */
export async function startApp(
  config: Config,
  log: Logger,
  metrics: AppMetrics = createMetrics(),
  options: AppOptions = {},
): Promise<App> {
  logSettings(config, log);
  const resources = new Resources(log);
  try {
    // The HTTP endpoints come first: /healthz answers from the first second, and /readyz says what
    // start-up is waiting for (the waits below can last STARTUP_WAIT_SECONDS).
    const startup: Startup = { waitingFor: 'postgres' };
    const http = await startHttp(config, metrics, startup, log, resources);

    const stores = await openStores(config, log, resources);

    startup.waitingFor = 'temporal';
    const { temporal, client, probe } = await openTemporal(config, log, resources);

    startup.waitingFor = 'worker';
    const rabbitmq = openRabbitmq(config, log, metrics, resources);
    const outages = new IngestOutages(metrics);
    // Set once the bridge and the sync watch run: until the bridge starts, ingest is not saturated;
    // until the watch's first look, the schedule counts as running.
    const later = { saturatedWithin: (_ms: number) => false, syncPaused: () => false };
    const syncHold = startSyncHold(config, later, { metrics, log }, resources);
    const activities = createActivities({
      ...stores,
      metrics,
      deadLetters: rabbitmq.deadLetters,
      outages,
      balanceHistoryDays: config.BALANCE_HISTORY_DAYS,
      onMinuteWritten: (minute) => syncHold?.written(minute),
      syncTaskQueue: config.TEMPORAL_SYNC_TASK_QUEUE,
    });
    const { workers, instanceQueue, done } = await startWorkers(config, temporal, activities, log, resources);
    registerInstance(config, stores.keydb, instanceQueue, log, resources);

    startup.waitingFor = 'schedules';
    const scheduleSettings = await startSchedules(config, client, log);

    const ingest = { client, probe, pool: stores.pool, rabbitmq, metrics, log, outages };
    const bridge = startIngest(config, { ...ingest, syncHold }, resources);
    later.saturatedWithin = (ms) => bridge.saturatedWithin(ms);

    const checks = {
      ...ingest,
      keydb: stores.keydb,
      bridge,
      workers,
      scheduleSettings,
    };
    const { health, watch } = await startChecks(checks, options, resources);
    startup.health = health;
    later.syncPaused = watch.syncPaused;

    let stopping: Promise<void> | undefined;
    return {
      httpPort: http.port,
      client,
      done,
      stop() {
        stopping ??= resources.closeAll().then(() => log.info('stopped'));
        return stopping;
      },
    };
  } catch (error) {
    log.warn({ err: (error as Error).message }, 'start-up failed; closing what it opened');
    await resources.closeAll();
    throw error;
  }
}

function logSettings(config: Config, log: Logger): void {
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
  const shortfall = eagerStartShortfall(config);
  // Info, not a warning: with several instances each holds only its share of BRIDGE_MAX_IN_FLIGHT.
  // balance_sync_workflow_starts_total{dispatch="task_queue"} says whether it happens.
  if (shortfall) log.info({ shortfall }, 'some ingest starts may not be eager');
}

const onIdleError = (log: Logger) => (error: Error) =>
  log.warn({ err: error.message }, 'idle Postgres client failed');

/** The HTTP endpoints, with GET /balances on a pool of its own when BALANCES_API_TOKEN is set. */
async function startHttp(
  config: Config,
  metrics: AppMetrics,
  startup: Startup,
  log: Logger,
  resources: Resources,
) {
  const token = config.BALANCES_API_TOKEN;
  // A pool of its own, so a dispute query never waits behind the sync or ingest.
  const historyPool = token ? createPool(config.DATABASE_URL, 'history', onIdleError(log)) : undefined;
  if (historyPool) resources.add('history pool', () => historyPool.end());
  const http = await startHttpServer(config.HTTP_PORT, {
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
  resources.add('HTTP server', () => new Promise((resolve) => http.server.close(resolve)));
  log.info({ port: http.port }, 'http endpoints ready');
  return http;
}

/**
 * Connects to Temporal (re-reading TEMPORAL_API_KEY_FILE while it runs, if set) and starts the probe
 * that workflow starts and readiness wait on.
 */
async function openTemporal(config: Config, log: Logger, resources: Resources) {
  const temporal = await connectToTemporal(config, log);
  resources.add('Temporal connection', () => temporal.connection.close());
  const keyFile = process.env[API_KEY_FILE];
  if (keyFile) {
    const watcher = watchApiKeyFile(temporal.connection, keyFile, temporal.apiKey, log);
    resources.add('API key file watch', () => watcher.stop());
  }
  const client = new Client({ connection: temporal.connection, namespace: temporal.namespace });
  const probe = new TemporalProbe(client, { log });
  probe.start();
  resources.add('Temporal probe', () => probe.stop());
  return { temporal, client, probe };
}

/**
 * The Postgres pools (ingest, sync, reconcile: each job its own) and the KeyDB client, once the
 * producer's tables exist and the app's own are migrated.
 */
async function openStores(config: Config, log: Logger, resources: Resources) {
  const openPool = (job: PoolJob) => {
    const pool = createPool(config.DATABASE_URL, job, onIdleError(log));
    resources.add(`${job} pool`, () => pool.end());
    return pool;
  };
  const pool = openPool('ingest');
  const syncPool = openPool('sync');
  const reconcilePool = openPool('reconcile');
  const keydb = createKeydbClient(config.KEYDB_URL, log);
  resources.add('KeyDB client', () => keydb.disconnect());
  await waitForProducerTables(pool, log, config.STARTUP_WAIT_SECONDS);
  const { installedTriggers } = await migrate(pool);
  if (installedTriggers) log.info('balance triggers installed and running sums computed');
  return { pool, syncPool, reconcilePool, keydb };
}

/**
 * Two RabbitMQ connections: the bridge consumes on one; dead letters go out on the other, so a
 * resource alarm blocks the publishing one, never the consumer's acks.
 */
function openRabbitmq(config: Config, log: Logger, metrics: AppMetrics, resources: Resources) {
  const name = `balance-sync bridge ${config.TEMPORAL_TASK_QUEUE}`;
  const heartbeat = config.RABBITMQ_HEARTBEAT_SECONDS;
  const consuming = connectToRabbitmq(config.RABBITMQ_URL, name, log, heartbeat);
  resources.add('RabbitMQ consuming connection', () => consuming.close());
  const publishing = connectToRabbitmq(config.RABBITMQ_URL, `${name} publishing`, log, heartbeat);
  resources.add('RabbitMQ publishing connection', () => publishing.close());
  countLostConnections({ consuming, publishing }, metrics);
  const blocked = watchBlocked([consuming, publishing], { metrics, log });
  const deadLetters = createConfirmedPublisher(publishing, config.DEAD_LETTER_QUEUE, { log });
  resources.add('dead-letter publisher', () => deadLetters.close());
  return { consuming, publishing, blocked, deadLetters };
}

/**
 * Three workers in this one process: ingest on the main task queue, the schedules' runs on their own,
 * so a minute's sync never waits behind an ingest backlog, and activities only on this instance's own
 * queue, where SyncBalances places one of the minute's two racing writers (src/keydb/sync-instances.ts).
 */
async function startWorkers(
  config: Config,
  temporal: { connection: NativeConnection; namespace: string },
  activities: Activities,
  log: Logger,
  resources: Resources,
) {
  const instanceQueue = `${config.TEMPORAL_SYNC_TASK_QUEUE}/instance-${randomUUID()}`;
  const workers = await Promise.all(
    [config.TEMPORAL_TASK_QUEUE, config.TEMPORAL_SYNC_TASK_QUEUE, instanceQueue].map((taskQueue) =>
      createWorker({
        ...temporal,
        taskQueue,
        activities,
        activitiesOnly: taskQueue === instanceQueue,
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
  // Shutdown lets running tasks finish for a grace period and forces them at 8 s (worker.ts).
  resources.add('workers', async () => {
    for (const worker of workers) if (worker.getState() === 'RUNNING') worker.shutdown();
    await done.catch(() => undefined);
  });
  return { workers, instanceQueue, done };
}

/**
 * Lists this instance's own queue as live while it runs; unlisted first at shutdown, so no new
 * minute places a writer on a worker about to stop.
 */
function registerInstance(
  config: Config,
  keydb: Redis,
  instanceQueue: string,
  log: Logger,
  resources: Resources,
) {
  const unregister = registerInstanceQueue(keydb, config.TEMPORAL_SYNC_TASK_QUEUE, instanceQueue, log);
  resources.add('sync registry lease', unregister);
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

/**
 * With BRIDGE_HOLD_FOR_SYNC, the hold of new ingest starts around each minute's sync. Saturated: the
 * throttle closed, or messages waited in the incoming queue, within the last minute; and a paused
 * schedule publishes nothing, so there is no minute to make room for.
 */
function startSyncHold(
  config: Config,
  ingest: { saturatedWithin: (ms: number) => boolean; syncPaused: () => boolean },
  deps: { metrics: AppMetrics; log: Logger },
  resources: Resources,
): SyncHold | undefined {
  if (!config.BRIDGE_HOLD_FOR_SYNC) return undefined;
  const saturated = () => ingest.saturatedWithin(60_000) && !ingest.syncPaused();
  const hold = new SyncHold({ leadMs: config.SYNC_LEAD_SECONDS * 1000, saturated }, deps);
  resources.add('sync hold', () => hold.stop());
  return hold;
}

interface IngestDeps {
  client: Client;
  probe: TemporalProbe;
  pool: pg.Pool;
  rabbitmq: ReturnType<typeof openRabbitmq>;
  metrics: AppMetrics;
  log: Logger;
  outages: IngestOutages;
}

/**
 * The terminated-runs sweep, then the bridge: registered after the sweep, the bridge is stopped
 * first, so consuming stops before anything else on the ingest path.
 */
function startIngest(config: Config, deps: IngestDeps & { syncHold?: SyncHold }, resources: Resources) {
  const { client, probe, pool, rabbitmq, metrics, log, outages } = deps;
  const terminatedRuns = watchTerminatedRuns(
    { taskQueue: config.TEMPORAL_TASK_QUEUE },
    { client, pool, publisher: rabbitmq.deadLetters, metrics, log },
  );
  resources.add('terminated-runs sweep', () => terminatedRuns.stop());
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
    },
    {
      connection: rabbitmq.consuming,
      publishing: rabbitmq.publishing,
      deadLetters: rabbitmq.deadLetters,
      client,
      temporal: probe,
      providers: new ProviderDirectory(pool),
      metrics,
      log,
      outages,
      syncHold: deps.syncHold,
    },
  );
  resources.add('RabbitMQ bridge', () => bridge.stop());
  return bridge;
}

/**
 * The readiness checks, then the sync watch, which names the failing ones as a stopped sync's cause.
 * One closer stops the two side by side.
 */
async function startChecks(
  deps: IngestDeps & {
    keydb: Redis;
    bridge: Bridge;
    workers: Awaited<ReturnType<typeof startWorkers>>['workers'];
    scheduleSettings: ScheduleSettings;
  },
  options: AppOptions,
  resources: Resources,
) {
  const { client, probe, pool, rabbitmq, metrics, log, outages, keydb, bridge, workers } = deps;
  const health = createHealth(metrics, log, options.health);
  health.add('rabbitmq', () => (bridge.isConsuming() ? undefined : 'not consuming'), 'rabbitmq');
  health.add('rabbitmqUnblocked', () => (rabbitmq.blocked() ? 'blocked by a resource alarm' : undefined));
  health.add(
    'deadLetterQueue',
    () =>
      rabbitmq.deadLetters.refusal() ?? (bridge.deadLettersAccepted() ? undefined : 'refusing dead letters'),
  );
  health.add('worker', () => workers.find((w) => w.getState() !== 'RUNNING')?.getState());
  // An outage the ingest path is retrying (a revoked grant, a read-only database, an expired API key)
  // fails its dependency's check even while a ping still answers, and /readyz says why. Temporal's
  // ping is the bridge's probe (temporal-probe.ts): one loop, read by both.
  health.add('temporal', () => outages.reasons().temporal ?? probe.downReason(), 'temporal');
  health.add(
    'postgres',
    async () => outages.reasons().postgres ?? void (await pool.query('SELECT 1')),
    'postgres',
  );
  health.add('keydb', () => keydbAnswers(keydb), 'keydb');
  await health.start();
  const watch = startSyncWatch(
    {
      client,
      pool,
      settings: deps.scheduleSettings,
      metrics,
      log,
      failingChecks: () =>
        Object.fromEntries(
          Object.entries(health.state()?.reasons ?? {}).filter(([check]) => SYNC_CHECKS.includes(check)),
        ),
    },
    options.syncWatch,
  );
  resources.add('health checks and sync watch', () => Promise.all([watch.stop(), health.stop()]));
  return { health, watch };
}
