// npm run bench:ingest -- [--messages 5000] [--phases ceiling,micro,slots,baseline,drain,knobs,two,fixed,file,throttle,variants]
//
// Ingest throughput and latency of the service against its own Temporal dev server, all figures in one
// run so they can be read as ratios: the empty-workflow ceiling, a no-Temporal baseline consumer, the
// service draining a backlog (in-memory and file-backed dev server, several knobs, two processes), and
// publish-to-row latency at fixed rates with the worker's RSS. Progress on stderr, tables on stdout.
import { Client, Connection } from '@temporalio/client';
import amqplib from 'amqplib';
import { Redis } from 'ioredis';
import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { migrate } from '../src/postgres/schema.js';
import { spawnApp, type AppProcess } from './lib/app-process.js';
import { baselineDrain } from './lib/baseline.js';
import { publishToRowLatency, startPaced } from './lib/paced.js';
import {
  backendPids,
  createBenchDatabase,
  deleteQueues,
  dropBenchDatabase,
  publishBacklog,
  queueDepth,
  RABBITMQ_URL,
  REDIS_BASE_URL,
  startDevServer,
  type DevServer,
  waitForServices,
} from './lib/services.js';
import {
  closedLoop,
  measureCeiling,
  startBenchWorker,
  type BenchWorker,
  type CeilingRow,
  type Tuning,
  workflowBacklog,
} from './lib/temporal-load.js';
import {
  CpuMeter,
  fmt,
  machineDescription,
  options,
  pidsByComm,
  progress,
  report,
  sleep,
  table,
  type CpuReport,
} from './lib/util.js';

const opts = options({
  messages: 5000,
  knobMessages: 0, // 0: same as --messages
  providers: 1000,
  concurrencies: '10,20,40',
  ceilingSeconds: 10,
  microSeconds: 10,
  fixedSeconds: 30,
  phases: 'ceiling,micro,slots,baseline,drain,knobs,two,fixed,file',
  database: 'balance_sync_bench_ingest',
  keydbDb: 12,
  budgetMinutes: 45,
  throttlePairs: 2, // the throttle phase: this many (off, on) pairs of drains, alternating
  throttleInFlight: 0, // BRIDGE_MAX_IN_FLIGHT for the "on" drains; 0: the service's default
  // The variants phase: drains alternating app environments, with a memory probe preloaded, as
  // `label:KEY=value&KEY=value;label2:...`; every variant runs bare `node dist/src/main.js` plus its
  // own environment (NODE_OPTIONS for node flags), except one whose only assignment is `start`,
  // which runs with npm start's flags and environment.
  variants: 'bare:;start:start',
  variantRounds: 2,
});
const phases = new Set(opts.phases.split(','));
const knobMessages = opts.knobMessages || opts.messages;
const NAME = 'bench-ingest';
const QUEUE = `${NAME}.incoming_transactions`;
const BASELINE_QUEUE = `${NAME}.baseline`;

const hardStop = setTimeout(() => {
  progress(`time budget of ${opts.budgetMinutes} min exhausted; exiting`);
  process.exit(3);
}, opts.budgetMinutes * 60_000);
hardStop.unref();

await waitForServices();
const databaseUrl = await createBenchDatabase(opts.database, opts.providers);
const pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
pool.on('error', (error) => progress(`idle Postgres client failed: ${error.message}`));
await migrate(pool); // the service's tables and triggers, as the app would create them
const keydbUrl = `${REDIS_BASE_URL}/${opts.keydbDb}`;
// The app's minute sync writes balances there; start and end with it empty.
async function flushKeydb() {
  const keydb = new Redis(keydbUrl, { maxRetriesPerRequest: 2 });
  keydb.on('error', () => undefined);
  await keydb.flushdb().catch(() => undefined);
  keydb.disconnect();
}
await flushKeydb();
await deleteQueues(QUEUE, `${QUEUE}.dead`, BASELINE_QUEUE);
const conditions: string[] = [];
const noteLoad = (phase: string) => conditions.push(`${phase}: load average ${loadavg()[0]!.toFixed(1)}`);
const failures: string[] = [];

const postmasterStart = async () =>
  (await pool.query<{ t: string }>('SELECT pg_postmaster_start_time()::text AS t')).rows[0]!.t;

/**
 * Runs one phase; a failure (e.g. another process restarting a shared service) is reported, not fatal,
 * and a Postgres restart during the phase is noted next to its figures.
 */
async function guarded(name: string, run: () => Promise<void>): Promise<void> {
  noteLoad(name);
  const before = await postmasterStart().catch(() => 'unknown');
  try {
    await run();
  } catch (error) {
    failures.push(`${name}: ${(error as Error).message}`);
    progress(`phase ${name} failed: ${(error as Error).message}`);
  }
  const after = await postmasterStart().catch(() => 'unknown');
  if (before !== after)
    conditions.push(`${name}: Postgres was restarted during this phase by another process`);
}

// ---- helpers -------------------------------------------------------------------------------------

let runSeq = 0;
const nextPrefix = (label: string) => `${label}-${Date.now()}-${runSeq++}`;

async function ledgerStats(prefix: string) {
  const { rows } = await pool.query<{ n: string; first: string | null; last: string | null }>(
    `SELECT count(*) AS n, (extract(epoch FROM min(ingested_at)) * 1000)::text AS first,
            (extract(epoch FROM max(ingested_at)) * 1000)::text AS last
     FROM balance_sync_ingest_ledger WHERE ingest_key LIKE $1`,
    [`ingest-${prefix}-%`],
  );
  const row = rows[0]!;
  return { n: Number(row.n), first: Number(row.first), last: Number(row.last) };
}

async function waitForRows(prefix: string, count: number, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  let lastReport = 0;
  for (;;) {
    // A shared Postgres may be restarted by someone else's test: keep polling until the deadline.
    const stats = await ledgerStats(prefix).catch((error: unknown) => {
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

function meter(server: DevServer, apps: () => number[]) {
  return new CpuMeter({
    temporal: () => [server.pid],
    app: apps,
    postgres: () => backendPids(pool, opts.database),
    rabbitmq: () => pidsByComm('beam.smp'),
    bench: () => [process.pid],
  });
}

interface DrainRow {
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
  /** Empty-workflow rate measured just before this drain, same server, best concurrency. */
  adjacentCeiling: number | null;
  /** Most workflow tasks seen waiting on the task queue (matching) during the drain. */
  peakBacklog: number;
  /** Messages ready on RabbitMQ when half the rows were written: where the backlog waits. */
  queueDepthAtHalf: number | null;
}

/** Publishes a backlog, then starts `processes` app instances and measures the drain into Postgres. */
async function drain(
  server: DevServer,
  benchWorker: BenchWorker | undefined,
  serverLabel: string,
  label: string,
  messages: number,
  env: Record<string, string> = {},
  processes = 1,
  bare = false,
): Promise<DrainRow> {
  const prefix = nextPrefix(label);
  // The reference for this drain, measured right before it: other load on the machine comes and goes.
  let adjacentCeiling: number | null = null;
  if (benchWorker) {
    const result = await closedLoop(benchWorker, {
      workflowType: 'BenchEmpty',
      concurrency: bestConcurrency,
      durationMs: 6000,
      eager: true,
      idPrefix: nextPrefix('adjacent'),
    });
    adjacentCeiling = result.rate;
    progress(`adjacent ceiling before ${label}: ${result.rate.toFixed(1)} wf/s`);
  }
  await publishBacklog(QUEUE, prefix, messages, opts.providers);
  const apps: AppProcess[] = [];
  const spawnedAt = Date.now();
  for (let i = 0; i < processes; i++) {
    apps.push(spawnApp({ temporalAddress: server.address, databaseUrl, keydbUrl, name: NAME, env, bare }));
  }
  let cpuMeter: CpuMeter | undefined;
  try {
    await Promise.all(apps.map((app) => app.waitForLog('consuming')));
    // CPU from the moment all consume: the drain itself, not module loading and connecting.
    cpuMeter = meter(server, () => apps.map((app) => app.pid));
    // Where the backlog sits: still on RabbitMQ, or acked and waiting in Temporal's task queue.
    const client = new Client({ connection: await Connection.connect({ address: server.address }) });
    const amqp = await amqplib.connect(RABBITMQ_URL);
    const channel = await amqp.createChannel();
    let queueEmptyAt: number | undefined;
    let peakBacklog = 0;
    let queueDepthAtHalf: number | null = null;
    const watcher = setInterval(() => {
      void channel
        .checkQueue(QUEUE)
        .then(async ({ messageCount }) => {
          if (messageCount === 0) queueEmptyAt ??= Date.now();
          if (queueDepthAtHalf === null && (await ledgerStats(prefix)).n >= (messages * processes) / 2)
            queueDepthAtHalf = messageCount;
        })
        .catch(() => undefined);
      void workflowBacklog(client, NAME)
        .then(({ count }) => (peakBacklog = Math.max(peakBacklog, count)))
        .catch(() => undefined);
    }, 1000);
    const stats = await waitForRows(prefix, messages, Math.max(120_000, messages * 100)).finally(() => {
      clearInterval(watcher);
      void amqp.close().catch(() => undefined);
      void client.connection.close().catch(() => undefined);
    });
    const cpu = await cpuMeter.stop();
    cpuMeter = undefined;
    const row: DrainRow = {
      label,
      server: serverLabel,
      messages,
      rate: (stats.n - 1) / ((stats.last - stats.first) / 1000),
      rateWithStartup: stats.n / ((stats.last - spawnedAt) / 1000),
      spawnToFirstRowMs: stats.first - spawnedAt,
      cpu,
      rows: stats.n,
      adjacentCeiling,
      queueEmptyToLastRowMs: queueEmptyAt === undefined ? null : stats.last - queueEmptyAt,
      peakBacklog,
      queueDepthAtHalf,
    };
    progress(
      `drain ${label} (${serverLabel}): ${row.rate.toFixed(1)} msg/s steady, ${row.rateWithStartup.toFixed(1)} with start-up`,
    );
    return row;
  } finally {
    await cpuMeter?.stop();
    await Promise.all(apps.map((app) => app.stop()));
    const left = await queueDepth(QUEUE);
    if (left > 0) {
      progress(`  ${left} messages left on ${QUEUE}; deleting the queue`);
      await deleteQueues(QUEUE);
    }
  }
}

const cpuColumns = (cpu: CpuReport, messages: number) => {
  const per1k = (name: string) => ((cpu.processes[name] ?? 0) / messages) * 1000;
  return [
    per1k('temporal'),
    per1k('app'),
    per1k('postgres'),
    per1k('rabbitmq'),
    `${(cpu.machineBusy * 100).toFixed(0)}%`,
    `${(cpu.machineSteal * 100).toFixed(1)}%`,
    fmt(cpu.peakRss.app ?? null, 0),
  ];
};

/** `label:KEY=value&KEY=value;label2:...` → [label, env] pairs, for the variants phase. */
function parseVariants(spec: string): [string, Record<string, string>][] {
  return spec.split(';').map((part) => {
    const [label, assignments = ''] = part.split(/:(.*)/s, 2) as [string, string | undefined];
    const env: Record<string, string> = {};
    for (const assignment of assignments.split('&').filter(Boolean)) {
      if (assignment === 'start') {
        env.start = '';
        continue;
      }
      const at = assignment.indexOf('=');
      if (at < 1) throw new Error(`--variants: "${assignment}" is not KEY=value`);
      env[assignment.slice(0, at)] = assignment.slice(at + 1);
    }
    return [label.trim(), env];
  });
}

/** The memory probe's files for one drain → the columns of the memory table. */
async function readMemoryProbe(dir: string, prefix: string): Promise<(string | number)[]> {
  const base = prefix.slice(dir.length + 1);
  const threads = (await readdir(dir))
    .filter((entry) => entry.startsWith(`${base}.`))
    .map(
      (entry) =>
        JSON.parse(readFileSync(join(dir, entry), 'utf8')) as {
          threadId: number;
          peak: { heapTotal: number };
          atPeakRss?: Record<string, number>;
        },
    );
  const main = threads.find((thread) => thread.threadId === 0)?.atPeakRss;
  if (!main) return ['no probe data', '–', '–', '–', '–', '–', '–'];
  const workflowHeaps = threads
    .filter((thread) => thread.threadId !== 0)
    .reduce((sum, thread) => sum + thread.peak.heapTotal, 0);
  const rest = main.rss! - main.heapTotal! - main.external! - workflowHeaps;
  return [
    main.rss!,
    main.heapTotal!,
    main.heapUsed!,
    main.external!,
    main.arrayBuffers!,
    `${workflowHeaps.toFixed(1)} (${threads.length - 1} threads)`,
    rest.toFixed(0),
  ];
}

// ---- in-memory dev server -------------------------------------------------------------------------

const memServer = await startDevServer();
const worker: BenchWorker = await startBenchWorker(memServer.address, 'bench-load', pool);
let ceilingRows: CeilingRow[] = [];
let ceiling: CeilingRow | undefined;
let ceilingCpu: CpuReport | undefined;
const microRows: (string | number)[][] = [];
const slotRows: (string | number)[][] = [];
const drains: DrainRow[] = [];
const fixedRows: (string | number)[][] = [];
let baselineRate: number | undefined;
let ceilingAfter: number | undefined;
let fileCeiling: CeilingRow | undefined;

if (phases.has('ceiling') || phases.has('micro') || phases.has('fixed') || phases.has('slots')) {
  await guarded('ceiling', async () => {
    const cpuMeter = meter(memServer, () => []);
    const measured = await measureCeiling(worker, {
      concurrencies: opts.concurrencies.split(',').map(Number),
      durationMs: opts.ceilingSeconds * 1000,
      eager: [true, false],
      tag: nextPrefix('ceiling'),
    });
    ceilingCpu = await cpuMeter.stop();
    ceilingRows = measured.rows;
    ceiling = measured.best;
  });
}
const bestConcurrency = ceiling?.concurrency ?? 20;

if (phases.has('micro')) {
  await guarded('micro', async () => {
    const variants: { label: string; type: string; batch: number }[] = [
      { label: 'empty workflow', type: 'BenchEmpty', batch: 1 },
      { label: 'IngestTransaction (local activity, the service)', type: 'IngestTransaction', batch: 1 },
      { label: 'normal activity, same INSERT', type: 'BenchNormalInsert', batch: 1 },
      { label: 'batch of 10, one local activity', type: 'BenchBatchInsert', batch: 10 },
    ];
    for (const variant of variants) {
      const prefix = nextPrefix(`micro-${variant.type}`);
      const result = await closedLoop(worker, {
        workflowType: variant.type,
        concurrency: bestConcurrency,
        durationMs: opts.microSeconds * 1000,
        eager: true,
        idPrefix: prefix,
        args: (seq, workflowId) => {
          if (variant.type === 'BenchEmpty') return [];
          if (variant.batch === 1) return [{ providerId: (seq % opts.providers) + 1, value: '1.25' }];
          return [
            Array.from({ length: variant.batch }, (_, i) => ({
              ingestKey: `${workflowId}-${i}`,
              providerId: ((seq * variant.batch + i) % opts.providers) + 1,
              value: '1.25',
            })),
          ];
        },
      });
      progress(`micro ${variant.label}: ${result.rate.toFixed(1)} wf/s`);
      microRows.push([
        variant.label,
        bestConcurrency,
        result.rate,
        result.rate * variant.batch,
        result.latency.p50,
        result.latency.p99,
        result.errors,
      ]);
    }
  });
}

if (phases.has('slots')) {
  await guarded('slots', async () => {
    const settings: { label: string; tuning: Tuning }[] = [
      { label: 'maxConcurrentWorkflowTaskExecutions 5', tuning: { maxConcurrentWorkflowTaskExecutions: 5 } },
      { label: 'defaults (40 workflow tasks, 100 local activities)', tuning: {} },
      {
        label: 'maxConcurrentWorkflowTaskExecutions 100, local activities 200',
        tuning: { maxConcurrentWorkflowTaskExecutions: 100, maxConcurrentLocalActivityExecutions: 200 },
      },
    ];
    for (const setting of settings) {
      const tq = nextPrefix('slots');
      const tuned = await startBenchWorker(memServer.address, tq, pool, setting.tuning);
      const result = await closedLoop(tuned, {
        workflowType: 'IngestTransaction',
        concurrency: 64, // BRIDGE_PREFETCH's default: the most starts the bridge has in flight
        durationMs: opts.microSeconds * 1000,
        eager: true,
        idPrefix: tq,
        args: (seq) => [{ providerId: (seq % opts.providers) + 1, value: '1.25' }],
      });
      await tuned.stop();
      progress(`slots ${setting.label}: ${result.rate.toFixed(1)} wf/s`);
      slotRows.push([setting.label, 64, result.rate, result.latency.p50, result.latency.p99]);
    }
  });
}

// The bench worker stays up (idle, polling its own task queue) for the adjacent ceilings.

if (phases.has('baseline')) {
  await guarded('baseline', async () => {
    const prefix = nextPrefix('baseline');
    await publishBacklog(BASELINE_QUEUE, prefix, opts.messages, opts.providers);
    await baselineDrain(BASELINE_QUEUE, databaseUrl, opts.messages, 64, 300_000);
    const stats = await ledgerStats(prefix);
    baselineRate = (stats.n - 1) / ((stats.last - stats.first) / 1000);
    progress(`baseline consumer: ${baselineRate.toFixed(1)} msg/s`);
    await deleteQueues(BASELINE_QUEUE);
  });
}

if (phases.has('drain')) {
  await guarded('drain', async () => {
    drains.push(await drain(memServer, worker, 'in-memory', 'default (prefetch 64, eager)', opts.messages));
  });
}
if (phases.has('knobs')) {
  const knobs: [string, Record<string, string>][] = [
    ['prefetch 16', { BRIDGE_PREFETCH: '16' }],
    ['prefetch 256', { BRIDGE_PREFETCH: '256' }],
    ['eager start off', { BRIDGE_EAGER_START: 'false' }],
  ];
  for (const [label, env] of knobs) {
    await guarded(`knob ${label}`, async () => {
      drains.push(await drain(memServer, worker, 'in-memory', label, knobMessages, env));
    });
  }
}
if (phases.has('two')) {
  await guarded('two', async () => {
    drains.push(await drain(memServer, worker, 'in-memory', 'two app processes', opts.messages, {}, 2));
  });
}

if (phases.has('throttle')) {
  // The in-flight throttle off and on, alternating, so both see the same machine.
  for (let pair = 1; pair <= opts.throttlePairs; pair++) {
    const on: [string, Record<string, string>] =
      opts.throttleInFlight > 0
        ? [
            `throttle on (BRIDGE_MAX_IN_FLIGHT=${opts.throttleInFlight})`,
            { BRIDGE_MAX_IN_FLIGHT: String(opts.throttleInFlight) },
          ]
        : ['throttle on (BRIDGE_MAX_IN_FLIGHT default)', {}];
    const off: [string, Record<string, string>] = [
      'throttle off (BRIDGE_MAX_IN_FLIGHT=0)',
      { BRIDGE_MAX_IN_FLIGHT: '0' },
    ];
    for (const [label, env] of [off, on]) {
      await guarded(`throttle ${pair} ${label}`, async () => {
        drains.push(await drain(memServer, worker, 'in-memory', `${label} #${pair}`, opts.messages, env));
      });
    }
  }
}

const memoryRows: (string | number)[][] = [];
if (phases.has('variants')) {
  // Alternating, so every variant sees the same machine; the probe splits each drain's peak RSS.
  const variants = parseVariants(opts.variants);
  const probe = fileURLToPath(new URL('./lib/memory-probe.js', import.meta.url));
  const probeDir = await mkdtemp(join(tmpdir(), 'bench-memory-'));
  for (let round = 1; round <= opts.variantRounds; round++) {
    for (const [label, env] of variants) {
      const name = `${label} #${round}`;
      const probeFile = join(probeDir, `${label}-${round}`.replace(/[^\w.-]/g, '_'));
      const asStarted = 'start' in env;
      const nodeOptions = `${env.NODE_OPTIONS ?? ''} --import ${probe}`.trim();
      await guarded(`variant ${name}`, async () => {
        const own = Object.fromEntries(Object.entries(env).filter(([key]) => key !== 'start'));
        const variantEnv = { ...own, NODE_OPTIONS: nodeOptions, MEMORY_PROBE_FILE: probeFile };
        const row = await drain(
          memServer,
          worker,
          'in-memory',
          name,
          opts.messages,
          variantEnv,
          1,
          !asStarted,
        );
        drains.push(row);
        memoryRows.push([name, ...(await readMemoryProbe(probeDir, probeFile)), row.rate]);
      });
    }
  }
  await rm(probeDir, { recursive: true, force: true });
}

if (phases.has('fixed')) {
  await guarded('fixed', async () => {
    const half = Math.max(1, Math.round((ceiling?.rate ?? 40) / 2));
    const app = spawnApp({ temporalAddress: memServer.address, databaseUrl, keydbUrl, name: NAME });
    try {
      await app.waitForLog('consuming');
      await sleep(2000);
      for (const rate of [10, half]) {
        const prefix = nextPrefix(`fixed${rate}`);
        const cpuMeter = meter(memServer, () => [app.pid]);
        const paced = await startPaced(QUEUE, prefix, rate, opts.providers);
        await sleep(opts.fixedSeconds * 1000);
        const { sent } = await paced.stop();
        await waitForRows(prefix, sent, 60_000).catch((error: unknown) => progress((error as Error).message));
        const cpu = await cpuMeter.stop();
        const { latency, missing } = await publishToRowLatency(pool, prefix, paced.sentAt);
        progress(`fixed ${rate} msg/s: p50 ${latency.p50.toFixed(1)} ms, p99 ${latency.p99.toFixed(1)} ms`);
        fixedRows.push([
          rate === 10 ? '10' : `${rate} (half the ceiling)`,
          sent,
          missing,
          latency.p50,
          latency.p90,
          latency.p99,
          latency.max,
          rate === 10 ? 'p99 ≤ 250' : '',
          fmt(cpu.peakRss.app ?? null, 0),
          `${(cpu.machineBusy * 100).toFixed(0)}%`,
        ]);
      }
    } finally {
      await app.stop();
    }
  });
}

const first = ceiling;
if (first && ['drain', 'knobs', 'two', 'fixed', 'throttle', 'variants'].some((phase) => phases.has(phase))) {
  await guarded('ceiling-after', async () => {
    // The same measurement at the end, on a server now holding every run's history: a drift check.
    const again = await closedLoop(worker, {
      workflowType: 'BenchEmpty',
      concurrency: first.concurrency,
      durationMs: opts.ceilingSeconds * 1000,
      eager: first.eager,
      idPrefix: nextPrefix('ceiling-after'),
    });
    ceilingAfter = again.rate;
    progress(`ceiling at the end: ${again.rate.toFixed(1)} wf/s`);
  });
}
await worker.stop();
await memServer.stop();

// ---- file-backed dev server -----------------------------------------------------------------------

if (phases.has('file')) {
  await guarded('file', async () => {
    const dbFile = `/tmp/bench-temporal-${process.pid}.db`;
    const fileServer = await startDevServer({ dbFile });
    try {
      const fileWorker = await startBenchWorker(fileServer.address, 'bench-load', pool);
      const measured = await measureCeiling(fileWorker, {
        concurrencies: [bestConcurrency],
        durationMs: opts.ceilingSeconds * 1000,
        eager: [ceiling?.eager ?? true],
        tag: nextPrefix('file-ceiling'),
      });
      fileCeiling = measured.best;
      drains.push(
        await drain(
          fileServer,
          fileWorker,
          'file (--db-filename)',
          'default (prefetch 64, eager)',
          opts.messages,
        ),
      );
      await fileWorker.stop();
    } finally {
      await fileServer.stop();
      await rm(dbFile, { force: true });
      await rm(`${dbFile}-wal`, { force: true });
      await rm(`${dbFile}-shm`, { force: true });
    }
  });
}

await pool.end();
await deleteQueues(QUEUE, `${QUEUE}.dead`, BASELINE_QUEUE);
await dropBenchDatabase(opts.database);
await flushKeydb();

// ---- report -----------------------------------------------------------------------------------------

process.stdout.write(`\n## Ingest (${new Date().toISOString()})\n\n`);
process.stdout.write(
  `Machine: ${machineDescription()}. --messages ${opts.messages}, ${opts.providers} providers. ` +
    `Conditions: ${conditions.join('; ')}.\n` +
    (failures.length > 0 ? `\n**Failed phases** (not in the tables): ${failures.join('; ')}.\n` : ''),
);
if (ceilingRows.length > 0) {
  report(
    'Ceiling: empty workflow, start + wait for result (in-memory dev server)',
    table(
      [
        'concurrency',
        'eager start requested',
        'eagerly started',
        'workflows/s',
        'p50 ms',
        'p99 ms',
        'errors',
      ],
      ceilingRows.map((row) => [
        row.concurrency,
        String(row.eager),
        `${(row.eagerShare * 100).toFixed(0)}%`,
        row.rate,
        row.latency.p50,
        row.latency.p99,
        row.errors,
      ]),
    ) +
      (ceilingCpu
        ? `\n\nCPU during the ceiling runs: dev server ${fmt(ceilingCpu.processes.temporal)} s, bench process (client + worker) ${fmt(ceilingCpu.processes.bench)} s, over ${fmt(ceilingCpu.seconds)} s wall; machine busy ${(ceilingCpu.machineBusy * 100).toFixed(0)}%, steal ${(ceilingCpu.machineSteal * 100).toFixed(1)}%.`
        : '') +
      (ceilingAfter
        ? `\n\nSame best setting at the end of the in-memory runs: ${fmt(ceilingAfter)} workflows/s.`
        : ''),
  );
}
if (microRows.length > 0) {
  report(
    'Local activity vs normal activity vs batching (closed loop, eager start)',
    table(['variant', 'concurrency', 'workflows/s', 'rows/s', 'p50 ms', 'p99 ms', 'errors'], microRows),
  );
}
if (slotRows.length > 0) {
  report(
    'Worker slots (IngestTransaction closed loop, 64 in flight)',
    table(['worker tuning', 'in flight', 'workflows/s', 'p50 ms', 'p99 ms'], slotRows),
  );
}
if (drains.length > 0 || baselineRate) {
  const reference = (row: DrainRow) =>
    row.server.startsWith('file') ? (fileCeiling?.rate ?? Number.NaN) : (ceiling?.rate ?? Number.NaN);
  report(
    'Backlog drain into Postgres',
    table(
      [
        'run',
        'dev server',
        'messages',
        'msg/s (steady)',
        'msg/s incl. start-up',
        'spawn → first row ms',
        'adjacent ceiling wf/s',
        '÷ adjacent ceiling (target ≥ 0.8)',
        '÷ first ceiling',
        '÷ baseline',
      ],
      [
        ...(baselineRate
          ? [
              [
                'plain consumer (no Temporal)',
                '–',
                opts.messages,
                baselineRate,
                '–',
                '–',
                '–',
                '–',
                '–',
                '1.00',
              ],
            ]
          : []),
        ...drains.map((row) => [
          row.label,
          row.server,
          row.rows,
          row.rate,
          row.rateWithStartup,
          row.spawnToFirstRowMs,
          fmt(row.adjacentCeiling),
          row.adjacentCeiling ? (row.rate / row.adjacentCeiling).toFixed(2) : '–',
          (row.rate / reference(row)).toFixed(2),
          baselineRate ? (row.rate / baselineRate).toFixed(3) : '–',
        ]),
      ],
    ) +
      `\n\nCeilings used: in-memory ${fmt(ceiling?.rate ?? null)} workflows/s` +
      (fileCeiling ? `, file-backed ${fmt(fileCeiling.rate)} workflows/s (same concurrency).` : '.'),
  );
  report(
    'Where the time goes during the drains (CPU seconds per 1,000 messages)',
    table(
      [
        'run',
        'dev server',
        'app process(es)',
        'Postgres backends',
        'RabbitMQ',
        'machine busy',
        'steal',
        'app peak RSS MiB',
        'peak Temporal wf-task backlog',
        'RabbitMQ ready at half the rows',
        'RabbitMQ empty → last row ms',
      ],
      drains.map((row) => [
        `${row.label} (${row.server})`,
        ...cpuColumns(row.cpu, row.rows),
        row.peakBacklog,
        fmt(row.queueDepthAtHalf, 0),
        fmt(row.queueEmptyToLastRowMs),
      ]),
    ),
  );
}
if (memoryRows.length > 0) {
  report(
    'Where the peak RSS goes (MiB; main thread at its RSS peak, workflow threads at their own peaks)',
    table(
      [
        'run',
        'RSS',
        'main heap total',
        'main heap used',
        'external',
        'of which array buffers',
        'workflow threads heap total (peak, summed)',
        'rest (native)',
        'msg/s (steady)',
      ],
      memoryRows,
    ),
  );
}
if (fixedRows.length > 0) {
  report(
    'Fixed rates: publish → row committed (ledger ingested_at), in-memory dev server',
    table(
      [
        'rate msg/s',
        'messages',
        'missing',
        'p50 ms',
        'p90 ms',
        'p99 ms',
        'max ms',
        'target',
        'app RSS MiB (peak)',
        'machine busy',
      ],
      fixedRows,
    ),
  );
}
process.exit(0);
