// A backlog drain: publish N messages, spawn the service, time the rows into Postgres, with the
// ceilings measured on the same Temporal server right before and right after it (an empty workflow
// with plain and with eager start, and one running a single no-op local activity with eager start),
// so the drain can be read as a ratio of what that server did at that moment.
import { Client, Connection } from '@temporalio/client';
import amqplib from 'amqplib';
import type pg from 'pg';
import { appCounter, spawnApp, type AppProcess } from './app-process.js';
import {
  backendPids,
  deleteQueues,
  postgresBackgroundPids,
  publishBacklog,
  queueDepth,
  RABBITMQ_URL,
  type TemporalServer,
} from './services.js';
import { closedLoop, type BenchWorker, workflowBacklog } from './temporal-load.js';
import { CpuMeter, pidsByComm, progress, sleep, type CpuReport } from './util.js';

/** What every drain of one bench run shares. */
export interface DrainContext {
  pool: pg.Pool;
  database: string;
  databaseUrl: string;
  keydbUrl: string;
  /** The app's names (queue `<name>.incoming_transactions`, task queue `<name>`). */
  name: string;
  providers: number;
  /** Closed-loop concurrency of the adjacent ceilings. */
  concurrency: number;
  /** Seconds of each adjacent ceiling (plain and eager, before and after): 0 skips all three. */
  ceilingSeconds: number;
  /**
   * The one-local-activity ceiling (the goal's denominator) runs as many workflows as the drain has
   * messages rather than `ceilingSeconds`: 5 s closed loops back to back on one dev server read from
   * 112 to 187 wf/s, while four drains in one run read 82-91 msg/s (docs/BENCHMARKS.md, section 1);
   * equal counts also give the server the same history growth before, during and after the drain.
   */
  localCeilingMatchesDrain: boolean;
  /** Extra node flags for the app, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`. */
  appNodeArgs: string[];
}

export interface DrainSpec {
  server: TemporalServer;
  /** Runs the adjacent ceilings; without one they are skipped. */
  benchWorker?: BenchWorker;
  serverLabel: string;
  label: string;
  messages: number;
  env?: Record<string, string>;
  processes?: number;
  /** Without `npm start`'s node flags and environment. */
  bare?: boolean;
}

/** CPU ms per workflow during a ceiling: the server, its Postgres backends, this process (client + worker). */
export interface CeilingCpuMs {
  temporal: number[];
  postgresTemporal: number[];
  bench: number[];
}

/** Workflows/s, start + wait for the result, on the drain's server just before and after it. */
export interface AdjacentCeilings {
  /** Empty workflow, plain start. */
  plain: number[];
  /** Empty workflow, eager start. */
  eager: number[];
  /** One no-op local activity (BenchLocalNoop), eager start: the design's own minimum per message. */
  local: number[];
  eagerCpuMs: CeilingCpuMs;
  localCpuMs: CeilingCpuMs;
}

export interface DrainRow {
  label: string;
  server: string;
  messages: number;
  /** Steady rate between the first and the last row (ledger timestamps). */
  rate: number;
  /** From spawn to the last row. */
  rateWithStartup: number;
  spawnToFirstRowMs: number;
  cpu: CpuReport;
  rows: number;
  /** From RabbitMQ's queue being empty (all acked after their start, or in flight) to the last row. */
  queueEmptyToLastRowMs: number | null;
  adjacent: AdjacentCeilings | null;
  /** Most workflow tasks seen waiting on the task queue (matching) during the drain. */
  peakBacklog: number;
  /** Messages ready on RabbitMQ when half the rows were written: where the backlog waits. */
  queueDepthAtHalf: number | null;
  /** One run's start as Temporal stored it, in bytes. */
  payload: StartPayloadBytes | null;
  /** Share of new runs whose first task came back with the start (the app's workflow_starts_total). */
  eagerShare: number | null;
  /** Seconds new starts waited for a minute's sync (the app's bridge_sync_held_seconds_total), the longest of the apps. */
  heldSeconds: number | null;
}

/** The drain rate over the time no start was held for a minute's sync (the ceiling has no minute to write). */
export const rateOutsideHolds = (row: DrainRow) =>
  row.heldSeconds === null || row.rows < 2
    ? null
    : (row.rows - 1) / ((row.rows - 1) / row.rate - row.heldSeconds);

export const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / (values.length || 1);
export const eagerCeiling = (row: DrainRow) => (row.adjacent ? mean(row.adjacent.eager) : null);
export const plainCeiling = (row: DrainRow) => (row.adjacent ? mean(row.adjacent.plain) : null);
export const localCeiling = (row: DrainRow) => (row.adjacent ? mean(row.adjacent.local) : null);

/** The longest a drain may take to write its rows, and the matched ceiling to run as many workflows. */
const drainTimeoutMs = (messages: number) => Math.max(180_000, messages * 400);

let runSeq = 0;
export const nextPrefix = (label: string) => `${label}-${Date.now()}-${runSeq++}`;

export async function ledgerStats(pool: pg.Pool, prefix: string) {
  const { rows } = await pool.query<{ n: string; first: string | null; last: string | null }>(
    `SELECT count(*) AS n, (extract(epoch FROM min(ingested_at)) * 1000)::text AS first,
            (extract(epoch FROM max(ingested_at)) * 1000)::text AS last
     FROM balance_sync_ingest_ledger WHERE ingest_key LIKE $1`,
    [`ingest-${prefix}-%`],
  );
  const row = rows[0]!;
  return { n: Number(row.n), first: Number(row.first), last: Number(row.last) };
}

export async function waitForRows(pool: pg.Pool, prefix: string, count: number, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  let lastReport = 0;
  for (;;) {
    // A shared Postgres may be restarted by someone else's test: keep polling until the deadline.
    const stats = await ledgerStats(pool, prefix).catch((error: unknown) => {
      progress(`  ledger query failed (${(error as Error).message}); retrying`);
      return { n: 0, first: Number.NaN, last: Number.NaN };
    });
    if (stats.n >= count) return stats;
    if (Date.now() > deadline)
      throw new Error(`only ${stats.n}/${count} rows for ${prefix} after ${timeoutMs} ms`);
    if (Date.now() - lastReport > 5000) {
      lastReport = Date.now();
      progress(`  ${prefix}: ${stats.n}/${count} rows`);
    }
    await sleep(250);
  }
}

/**
 * CPU of the Temporal server, the app(s), Postgres (the bench database's backends; the backends of the
 * server's persistence and visibility databases, if it has them; the local Postgres's background
 * processes, machine-wide), RabbitMQ and this process.
 */
export function cpuMeter(context: DrainContext, server: TemporalServer, apps: () => number[]): CpuMeter {
  return new CpuMeter({
    temporal: () => [server.pid],
    app: apps,
    postgres: () => backendPids(context.pool, context.database),
    postgresTemporal: () => backendPids(context.pool, server.databases ?? []),
    postgresBackground: () => postgresBackgroundPids(context.pool),
    rabbitmq: () => pidsByComm('beam.smp'),
    bench: () => [process.pid],
  });
}

/** The plain and eager empty-workflow ceilings and the eager one-local-activity one, appended to `into`. */
async function measureAdjacent(
  context: DrainContext,
  server: TemporalServer,
  worker: BenchWorker,
  into: AdjacentCeilings,
  drainMessages: number,
) {
  const kinds = [
    { key: 'plain', workflowType: 'BenchEmpty', eager: false, cpu: undefined },
    { key: 'eager', workflowType: 'BenchEmpty', eager: true, cpu: into.eagerCpuMs },
    { key: 'local', workflowType: 'BenchLocalNoop', eager: true, cpu: into.localCpuMs },
  ] as const;
  for (const kind of kinds) {
    const meter = cpuMeter(context, server, () => []);
    const matched = kind.key === 'local' && context.localCeilingMatchesDrain;
    const result = await closedLoop(worker, {
      workflowType: kind.workflowType,
      concurrency: context.concurrency,
      durationMs: matched ? drainTimeoutMs(drainMessages) : context.ceilingSeconds * 1000,
      ...(matched ? { count: drainMessages } : {}),
      eager: kind.eager,
      idPrefix: nextPrefix(`adjacent-${kind.key}`),
    });
    const cpu = await meter.stop();
    into[kind.key].push(result.rate);
    if (kind.cpu) {
      const perWorkflow = (name: string) => ((cpu.processes[name] ?? 0) / (result.completed || 1)) * 1000;
      kind.cpu.temporal.push(perWorkflow('temporal'));
      kind.cpu.postgresTemporal.push(perWorkflow('postgresTemporal'));
      kind.cpu.bench.push(perWorkflow('bench'));
    }
    progress(
      `  adjacent ceiling, ${kind.workflowType} ${kind.eager ? 'eager' : 'plain'} start: ${result.rate.toFixed(1)} wf/s` +
        (result.errors > 0 ? ` (${result.errors} errors)` : ''),
    );
  }
}

/** Publishes a backlog, then starts the app process(es) and measures the drain into Postgres. */
export async function drain(context: DrainContext, spec: DrainSpec): Promise<DrainRow> {
  const adjacent: AdjacentCeilings | null =
    spec.benchWorker && context.ceilingSeconds > 0
      ? {
          plain: [],
          eager: [],
          local: [],
          eagerCpuMs: { temporal: [], postgresTemporal: [], bench: [] },
          localCpuMs: { temporal: [], postgresTemporal: [], bench: [] },
        }
      : null;
  if (adjacent) await measureAdjacent(context, spec.server, spec.benchWorker!, adjacent, spec.messages);
  const row = await drainOnly(context, spec);
  if (adjacent) await measureAdjacent(context, spec.server, spec.benchWorker!, adjacent, spec.messages);
  row.adjacent = adjacent;
  const eager = eagerCeiling(row);
  const local = localCeiling(row);
  progress(
    `drain ${spec.label} (${spec.serverLabel}): ${row.rate.toFixed(1)} msg/s steady` +
      (local ? `, ÷ one-local-activity ceiling ${(row.rate / local).toFixed(2)}` : '') +
      (eager ? `, ÷ empty eager ceiling ${(row.rate / eager).toFixed(2)}` : ''),
  );
  return row;
}

async function drainOnly(context: DrainContext, spec: DrainSpec): Promise<DrainRow> {
  const queue = `${context.name}.incoming_transactions`;
  const prefix = nextPrefix(spec.label.replace(/[^\w]+/g, '_'));
  const processes = spec.processes ?? 1;
  await publishBacklog(queue, prefix, spec.messages, context.providers);
  const apps: AppProcess[] = [];
  const spawnedAt = Date.now();
  for (let i = 0; i < processes; i++) {
    apps.push(
      spawnApp({
        temporalAddress: spec.server.address,
        databaseUrl: context.databaseUrl,
        keydbUrl: context.keydbUrl,
        name: context.name,
        env: spec.env ?? {},
        bare: spec.bare ?? false,
        nodeArgs: context.appNodeArgs,
      }),
    );
  }
  let meter: CpuMeter | undefined;
  try {
    await Promise.all(apps.map((app) => app.waitForLog('consuming')));
    // CPU from the moment all consume: the drain itself, not module loading and connecting.
    meter = cpuMeter(context, spec.server, () => apps.map((app) => app.pid));
    const watch = await watchBacklog(context, spec.server, queue, prefix, spec.messages);
    const stats = await waitForRows(
      context.pool,
      prefix,
      spec.messages,
      drainTimeoutMs(spec.messages),
    ).finally(() => watch.stop());
    const cpu = await meter.stop();
    meter = undefined;
    const dispatch = await appCounter(apps, 'balance_sync_workflow_starts_total', 'dispatch').catch(
      (): Record<string, number> => ({}),
    );
    const starts = Object.values(dispatch).reduce((a, b) => a + b, 0);
    const eagerShare = starts > 0 ? (dispatch.eager ?? 0) / starts : null;
    if (eagerShare !== null)
      progress(`  ${(eagerShare * 100).toFixed(1)}% of ${starts} starts eagerly dispatched`);
    // The apps hold the same minutes at the same time: the longest, not the sum. (A hold still on is not counted yet.)
    const held = await appCounter(
      apps,
      'balance_sync_bridge_sync_held_seconds_total',
      undefined,
      'max',
    ).catch((): Record<string, number> => ({}));
    const heldSeconds = '' in held ? held[''] : null;
    return {
      label: spec.label,
      server: spec.serverLabel,
      messages: spec.messages,
      rate: (stats.n - 1) / ((stats.last - stats.first) / 1000),
      rateWithStartup: stats.n / ((stats.last - spawnedAt) / 1000),
      spawnToFirstRowMs: stats.first - spawnedAt,
      cpu,
      rows: stats.n,
      adjacent: null,
      queueEmptyToLastRowMs: watch.queueEmptyAt() === undefined ? null : stats.last - watch.queueEmptyAt()!,
      peakBacklog: watch.peakBacklog(),
      queueDepthAtHalf: watch.queueDepthAtHalf(),
      payload: await startPayloadBytes(spec.server.address, `ingest-${prefix}-0`).catch(() => null),
      eagerShare,
      heldSeconds,
    };
  } finally {
    await meter?.stop();
    await Promise.all(apps.map((app) => app.stop()));
    const left = await queueDepth(queue);
    if (left > 0) {
      progress(`  ${left} messages left on ${queue}; deleting the queue`);
      await deleteQueues(queue);
    }
  }
}

/** Every second: is RabbitMQ's queue empty yet, how deep at half the rows, Temporal's task backlog. */
async function watchBacklog(
  context: DrainContext,
  server: TemporalServer,
  queue: string,
  prefix: string,
  messages: number,
) {
  const client = new Client({ connection: await Connection.connect({ address: server.address }) });
  const amqp = await amqplib.connect(RABBITMQ_URL);
  const channel = await amqp.createChannel();
  let queueEmptyAt: number | undefined;
  let peakBacklog = 0;
  let queueDepthAtHalf: number | null = null;
  const watcher = setInterval(() => {
    void channel
      .checkQueue(queue)
      .then(async ({ messageCount }) => {
        if (messageCount === 0) queueEmptyAt ??= Date.now();
        if (queueDepthAtHalf === null && (await ledgerStats(context.pool, prefix)).n >= messages / 2)
          queueDepthAtHalf = messageCount;
      })
      .catch(() => undefined);
    void workflowBacklog(client, context.name)
      .then(({ count }) => (peakBacklog = Math.max(peakBacklog, count)))
      .catch(() => undefined);
  }, 1000);
  return {
    queueEmptyAt: () => queueEmptyAt,
    peakBacklog: () => peakBacklog,
    queueDepthAtHalf: () => queueDepthAtHalf,
    stop() {
      clearInterval(watcher);
      void amqp.close().catch(() => undefined);
      void client.connection.close().catch(() => undefined);
    },
  };
}

/** The sizes that travel with every IngestTransaction start and are stored in its history. */
export interface StartPayloadBytes {
  /** The input payload (data + metadata) … */
  input: number;
  /** … of which the original message kept for a dead letter after the ack (its JSON). */
  original: number;
  memo: number;
  summary: number;
}

async function startPayloadBytes(address: string, workflowId: string): Promise<StartPayloadBytes> {
  const connection = await Connection.connect({ address });
  try {
    const history = await new Client({ connection }).workflow.getHandle(workflowId).fetchHistory();
    const started = history.events?.[0]?.workflowExecutionStartedEventAttributes;
    const payload = started?.input?.payloads?.[0];
    if (!payload?.data) throw new Error(`no input in ${workflowId}'s history`);
    const metadataBytes = (fields: Record<string, Uint8Array> | null | undefined) =>
      Object.entries(fields ?? {}).reduce((sum, [key, value]) => sum + key.length + value.length, 0);
    const input = JSON.parse(Buffer.from(payload.data).toString('utf8')) as { original?: unknown };
    const memoPayloads = Object.values(started?.memo?.fields ?? {});
    return {
      input: payload.data.length + metadataBytes(payload.metadata),
      original: input.original === undefined ? 0 : Buffer.byteLength(JSON.stringify(input.original)),
      memo: memoPayloads.reduce(
        (sum, field) => sum + (field.data?.length ?? 0) + metadataBytes(field.metadata),
        0,
      ),
      summary: history.events?.[0]?.userMetadata?.summary?.data?.length ?? 0,
    };
  } finally {
    await connection.close();
  }
}
