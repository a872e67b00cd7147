// npm run bench:ingest -- [--messages 1500] [--servers memory,file,file-wal,postgres] [--phases servers,ceiling,micro,slots,baseline,drain,knobs,two,fixed,throttle,variants]
//
// Ingest throughput and latency of the service against its own Temporal servers, all figures in one
// run so they can be read as ratios. The default phase, `servers`, drains a backlog on a fresh server
// of each kind: an in-memory dev server, a file-backed one started as compose did before (no pragmas)
// and as it does now (WAL, synchronous=NORMAL), and (`postgres`) Temporal 1.29.1 with PostgreSQL
// persistence and SQL visibility started by scripts/temporal-cluster.sh on databases of its own. Each
// drain sits beside the ceilings measured on that server just before and after it: an empty workflow
// (plain and eager start) and one running a single no-op local activity (eager start; the least one
// IngestTransaction per message can cost), with CPU per message split by process (app, Temporal, its
// Postgres backends, the app's Postgres backends, RabbitMQ). The other phases: the ceiling at several
// concurrencies, a no-Temporal baseline consumer, local vs normal activity, worker slots, knobs, two
// processes, the throttle off and on, memory variants, and publish-to-row latency at fixed rates.
// `--cpuProfDir DIR` runs the app with `node --cpu-prof` (bench/profile-summary.ts reads the profiles).
// Progress on stderr, tables on stdout.
import { Client } from '@temporalio/client';
import { Redis } from 'ioredis';
import { readFileSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { migrate } from '../src/postgres/schema.js';
import { spawnApp } from './lib/app-process.js';
import { baselineDrain } from './lib/baseline.js';
import {
  cpuMeter,
  drain,
  type DrainContext,
  type DrainRow,
  ledgerStats,
  nextPrefix,
  waitForRows,
} from './lib/drain.js';
import {
  type CountCostRow,
  reportCeiling,
  reportClosedLoops,
  reportCountCost,
  reportDrains,
  reportFixed,
  reportMemory,
} from './lib/ingest-report.js';
import { publishToRowLatency, startPaced } from './lib/paced.js';
import {
  createBenchDatabase,
  deleteQueues,
  dropBenchDatabase,
  publishBacklog,
  REDIS_BASE_URL,
  SQLITE_PRAGMAS,
  startDevServer,
  startTemporalCluster,
  type DevServer,
  type TemporalServer,
  waitForServices,
} from './lib/services.js';
import {
  closedLoop,
  countLoop,
  measureCeiling,
  startBenchWorker,
  type BenchWorker,
  type CeilingRow,
  type Tuning,
} from './lib/temporal-load.js';
import { fmt, machineDescription, options, progress, sleep, type CpuReport } from './lib/util.js';

const opts = options({
  messages: 1500,
  knobMessages: 0, // 0: same as --messages
  providers: 1000,
  concurrencies: '10,20,40',
  ceilingSeconds: 10,
  /** Each adjacent ceiling (plain and eager, before and after every drain); 0: none, the matched one too. */
  adjacentSeconds: 5,
  /**
   * The adjacent one-local-activity ceiling: `drain` runs as many workflows as the drain has messages
   * (the goal's denominator, matched to the drain); `seconds` runs --adjacentSeconds like the others.
   */
  adjacentLocal: 'drain',
  microSeconds: 10,
  fixedSeconds: 30,
  phases: 'servers',
  /**
   * The servers phase: which Temporal servers, in this order (memory, file, file-wal, postgres);
   * `kind+pragma=value` adds SQLite pragmas to a file-backed one.
   */
  servers: 'memory,file,file-wal',
  /** `postgres`: numHistoryShards of its fresh databases (scripts/temporal-cluster.sh's default is 4). */
  clusterShards: 4,
  /** Seconds of the throttle's count in a closed loop after each servers-phase drain; 0: skip. */
  countSeconds: 3,
  cpuProfDir: '',
  database: `balance_sync_bench_ingest_${process.pid}`,
  name: `bench-ingest-${process.pid}`,
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
if (!['drain', 'seconds'].includes(opts.adjacentLocal))
  throw new Error(`--adjacentLocal must be drain or seconds, not ${opts.adjacentLocal}`);
const phases = new Set(opts.phases.split(','));
const knobMessages = opts.knobMessages || opts.messages;
const NAME = opts.name;
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

const context: DrainContext = {
  pool,
  database: opts.database,
  databaseUrl,
  keydbUrl,
  name: NAME,
  providers: opts.providers,
  concurrency: 20,
  ceilingSeconds: opts.adjacentSeconds,
  localCeilingMatchesDrain: opts.adjacentLocal === 'drain',
  appNodeArgs: opts.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${opts.cpuProfDir}`] : [],
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

const drains: DrainRow[] = [];
const countRows: CountCostRow[] = [];

// ---- one fresh dev server per kind: the drain on the stack users run ---------------------------------

interface ServerKind {
  label: string;
  file: boolean;
  pragmas?: string[];
  /** Temporal 1.29.1 on PostgreSQL (scripts/temporal-cluster.sh), not a dev server. */
  cluster?: boolean;
}

const SERVER_KINDS: Record<string, ServerKind> = {
  memory: { label: 'in-memory', file: false },
  file: { label: 'file, no pragmas (compose before)', file: true, pragmas: [] },
  'file-wal': { label: 'file, WAL + synchronous=NORMAL (compose now)', file: true },
  postgres: { label: 'PostgreSQL-backed 1.29.1', file: false, cluster: true },
};

/** The throttle's count, back to back, on a server holding the drain's history: its CPU per count. */
async function countCost(
  server: TemporalServer,
  worker: BenchWorker,
  serverLabel: string,
  drainRate: number,
) {
  if (opts.countSeconds <= 0) return;
  const meter = cpuMeter(context, server, () => []);
  const client = new Client({ connection: worker.connection });
  const { counts, latency } = await countLoop(client, NAME, opts.countSeconds * 1000);
  const cpu = await meter.stop();
  const perCount = ((cpu.processes.temporal ?? 0) / counts) * 1000;
  const postgresPerCount = ((cpu.processes.postgresTemporal ?? 0) / counts) * 1000;
  countRows.push({
    server: serverLabel,
    counts,
    latencyP50Ms: latency.p50,
    serverCpuMsPerCount: perCount,
    postgresCpuMsPerCount: server.databases ? postgresPerCount : null,
    serverCpuMsPerMessage: ((perCount + postgresPerCount) * 2) / drainRate,
  });
}

/** `file-wal+wal_autocheckpoint=10000`: a server kind with more SQLite pragmas after its own. */
function serverSpec(kind: string): ServerKind {
  const [base = '', ...extra] = kind.split('+');
  const spec = SERVER_KINDS[base];
  if (!spec) throw new Error(`--servers: unknown server ${base} (${Object.keys(SERVER_KINDS).join(', ')})`);
  if (extra.length === 0) return spec;
  if (!spec.file) throw new Error(`--servers: ${kind}: pragmas need a file-backed server`);
  return {
    label: `${spec.label} + ${extra.join(', ')}`,
    file: true,
    pragmas: [...(spec.pragmas ?? SQLITE_PRAGMAS), ...extra],
  };
}

let clusterRuns = 0;

async function onFreshServer(kind: string) {
  const spec = serverSpec(kind);
  const dir = spec.file ? await mkdtemp(join(tmpdir(), 'bench-temporal-')) : undefined;
  const server: TemporalServer = spec.cluster
    ? await startTemporalCluster(`ingest_${process.pid}_${clusterRuns++}`, opts.clusterShards)
    : await startDevServer(
        dir
          ? { dbFile: join(dir, 'temporal.db'), ...(spec.pragmas ? { sqlitePragmas: spec.pragmas } : {}) }
          : {},
      );
  try {
    const worker = await startBenchWorker(server.address, 'bench-load', pool);
    try {
      // Warm up: workflow contexts, connections, sticky queues.
      for (const workflowType of ['BenchEmpty', 'BenchLocalNoop']) {
        await closedLoop(worker, {
          workflowType,
          concurrency: 10,
          durationMs: 2000,
          eager: true,
          idPrefix: nextPrefix('warm'),
        });
      }
      const serverLabel = spec.cluster ? `${spec.label}, ${opts.clusterShards} shards` : spec.label;
      const row = await drain(context, {
        server,
        benchWorker: worker,
        serverLabel,
        label: 'default (npm start)',
        messages: opts.messages,
      });
      drains.push(row);
      await countCost(server, worker, serverLabel, row.rate);
    } finally {
      await worker.stop();
    }
  } finally {
    await server.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  }
}

if (phases.has('servers')) {
  for (const kind of opts.servers.split(',')) {
    await guarded(`servers ${kind}`, () => onFreshServer(kind));
  }
}

// ---- one in-memory dev server for the other phases ---------------------------------------------------

let ceilingRows: CeilingRow[] = [];
let ceiling: CeilingRow | undefined;
let ceilingCpu: CpuReport | undefined;
const microRows: (string | number)[][] = [];
const slotRows: (string | number)[][] = [];
const fixedRows: (string | number)[][] = [];
const memoryRows: (string | number)[][] = [];
let baselineRate: number | undefined;
let ceilingAfter: number | undefined;
const otherPhases = [
  'ceiling',
  'micro',
  'slots',
  'baseline',
  'drain',
  'knobs',
  'two',
  'fixed',
  'throttle',
  'variants',
];

if (otherPhases.some((phase) => phases.has(phase))) {
  const memServer = await startDevServer();
  const worker: BenchWorker = await startBenchWorker(memServer.address, 'bench-load', pool);
  await inMemoryPhases(memServer, worker);
  await worker.stop();
  await memServer.stop();
}

async function inMemoryPhases(memServer: DevServer, worker: BenchWorker) {
  if (phases.has('ceiling') || phases.has('micro') || phases.has('fixed') || phases.has('slots')) {
    await guarded('ceiling', async () => {
      const meter = cpuMeter(context, memServer, () => []);
      const measured = await measureCeiling(worker, {
        concurrencies: opts.concurrencies.split(',').map(Number),
        durationMs: opts.ceilingSeconds * 1000,
        eager: [true, false],
        tag: nextPrefix('ceiling'),
      });
      ceilingCpu = await meter.stop();
      ceilingRows = measured.rows;
      ceiling = measured.best;
    });
  }
  context.concurrency = ceiling?.concurrency ?? 20;
  if (phases.has('micro')) await guarded('micro', () => microPhase(worker));
  if (phases.has('slots')) await guarded('slots', () => slotsPhase(memServer));
  // The bench worker stays up (idle, polling its own task queue) for the adjacent ceilings.
  if (phases.has('baseline')) await guarded('baseline', baselinePhase);
  await drainPhases(memServer, worker);
  if (phases.has('variants')) await variantsPhase(memServer, worker);
  if (phases.has('fixed')) await guarded('fixed', () => fixedPhase(memServer));
  const first = ceiling;
  if (
    first &&
    ['drain', 'knobs', 'two', 'fixed', 'throttle', 'variants'].some((phase) => phases.has(phase))
  ) {
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
}

async function microPhase(worker: BenchWorker) {
  const variants: { label: string; type: string; batch: number }[] = [
    { label: 'empty workflow', type: 'BenchEmpty', batch: 1 },
    { label: 'IngestTransaction (local activity, the service)', type: 'IngestTransaction', batch: 1 },
    { label: 'normal activity, same INSERT', type: 'BenchNormalInsert', batch: 1 },
    { label: 'batch of 10, one local activity', type: 'BenchBatchInsert', batch: 10 },
  ];
  for (const variant of variants) {
    const result = await closedLoop(worker, {
      workflowType: variant.type,
      concurrency: context.concurrency,
      durationMs: opts.microSeconds * 1000,
      eager: true,
      idPrefix: nextPrefix(`micro-${variant.type}`),
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
      context.concurrency,
      result.rate,
      result.rate * variant.batch,
      result.latency.p50,
      result.latency.p99,
      result.errors,
    ]);
  }
}

async function slotsPhase(memServer: DevServer) {
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
}

async function baselinePhase() {
  const prefix = nextPrefix('baseline');
  await publishBacklog(BASELINE_QUEUE, prefix, opts.messages, opts.providers);
  await baselineDrain(BASELINE_QUEUE, databaseUrl, opts.messages, 64, 300_000);
  const stats = await ledgerStats(pool, prefix);
  baselineRate = (stats.n - 1) / ((stats.last - stats.first) / 1000);
  progress(`baseline consumer: ${baselineRate.toFixed(1)} msg/s`);
  await deleteQueues(BASELINE_QUEUE);
}

/** drain, knobs, two, throttle: drains on the shared in-memory server, each beside its ceilings. */
async function drainPhases(server: DevServer, benchWorker: BenchWorker) {
  const runs: {
    phase: string;
    label: string;
    env?: Record<string, string>;
    messages: number;
    processes?: number;
  }[] = [];
  if (phases.has('drain'))
    runs.push({ phase: 'drain', label: 'default (npm start)', messages: opts.messages });
  if (phases.has('knobs')) {
    runs.push({
      phase: 'knob',
      label: 'prefetch 16',
      env: { BRIDGE_PREFETCH: '16' },
      messages: knobMessages,
    });
    runs.push({
      phase: 'knob',
      label: 'prefetch 256',
      env: { BRIDGE_PREFETCH: '256' },
      messages: knobMessages,
    });
    runs.push({
      phase: 'knob',
      label: 'eager start off',
      env: { BRIDGE_EAGER_START: 'false' },
      messages: knobMessages,
    });
  }
  if (phases.has('two'))
    runs.push({ phase: 'two', label: 'two app processes', messages: opts.messages, processes: 2 });
  if (phases.has('throttle')) {
    // The in-flight throttle off and on, alternating, so both see the same machine.
    const on: Record<string, string> =
      opts.throttleInFlight > 0 ? { BRIDGE_MAX_IN_FLIGHT: String(opts.throttleInFlight) } : {};
    const onLabel = `throttle on (BRIDGE_MAX_IN_FLIGHT ${opts.throttleInFlight || 'default'})`;
    for (let pair = 1; pair <= opts.throttlePairs; pair++) {
      runs.push({
        phase: 'throttle',
        label: `throttle off (BRIDGE_MAX_IN_FLIGHT=0) #${pair}`,
        env: { BRIDGE_MAX_IN_FLIGHT: '0' },
        messages: opts.messages,
      });
      runs.push({ phase: 'throttle', label: `${onLabel} #${pair}`, env: on, messages: opts.messages });
    }
  }
  for (const run of runs) {
    await guarded(`${run.phase} ${run.label}`, async () => {
      drains.push(
        await drain(context, {
          server,
          benchWorker,
          serverLabel: 'in-memory',
          label: run.label,
          messages: run.messages,
          ...(run.env ? { env: run.env } : {}),
          ...(run.processes ? { processes: run.processes } : {}),
        }),
      );
    });
  }
}

/** Alternating app environments, so every variant sees the same machine; the probe splits the peak RSS. */
async function variantsPhase(server: DevServer, benchWorker: BenchWorker) {
  const variants = parseVariants(opts.variants);
  const probe = fileURLToPath(new URL('./lib/memory-probe.js', import.meta.url));
  const probeDir = await mkdtemp(join(tmpdir(), 'bench-memory-'));
  for (let round = 1; round <= opts.variantRounds; round++) {
    for (const [label, env] of variants) {
      const name = `${label} #${round}`;
      const probeFile = join(probeDir, `${label}-${round}`.replace(/[^\w.-]/g, '_'));
      const nodeOptions = `${env.NODE_OPTIONS ?? ''} --import ${probe}`.trim();
      await guarded(`variant ${name}`, async () => {
        const own = Object.fromEntries(Object.entries(env).filter(([key]) => key !== 'start'));
        const row = await drain(context, {
          server,
          benchWorker,
          serverLabel: 'in-memory',
          label: name,
          messages: opts.messages,
          env: { ...own, NODE_OPTIONS: nodeOptions, MEMORY_PROBE_FILE: probeFile },
          bare: !('start' in env),
        });
        drains.push(row);
        memoryRows.push([name, ...(await readMemoryProbe(probeDir, probeFile)), row.rate]);
      });
    }
  }
  await rm(probeDir, { recursive: true, force: true });
}

async function fixedPhase(memServer: DevServer) {
  const half = Math.max(1, Math.round((ceiling?.rate ?? 40) / 2));
  const app = spawnApp({ temporalAddress: memServer.address, databaseUrl, keydbUrl, name: NAME });
  try {
    await app.waitForLog('consuming');
    await sleep(2000);
    for (const rate of [10, half]) {
      const prefix = nextPrefix(`fixed${rate}`);
      const meter = cpuMeter(context, memServer, () => [app.pid]);
      const paced = await startPaced(QUEUE, prefix, rate, opts.providers);
      await sleep(opts.fixedSeconds * 1000);
      const { sent } = await paced.stop();
      await waitForRows(pool, prefix, sent, 60_000).catch((error: unknown) =>
        progress((error as Error).message),
      );
      const cpu = await meter.stop();
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
reportCeiling(ceilingRows, ceilingCpu, ceilingAfter);
reportClosedLoops(microRows, slotRows);
reportDrains(
  drains,
  baselineRate,
  opts.messages,
  opts.adjacentSeconds === 0
    ? 'No ceilings beside the drains (--adjacentSeconds 0).'
    : context.localCeilingMatchesDrain
      ? `The one-local-activity ceiling runs as many workflows as its drain has messages (--adjacentLocal drain), the empty ones ${opts.adjacentSeconds} s each.`
      : `Each ceiling runs ${opts.adjacentSeconds} s.`,
);
reportCountCost(countRows);
reportMemory(memoryRows);
reportFixed(fixedRows);
process.exit(0);
