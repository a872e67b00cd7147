// npm run bench:sync-precision -- [--minutes 30] [--rate 0 (= half the measured ceiling)] [--variant service|shared|split]
//   [--server memory|file (the compose dev server: a SQLite file with WAL and synchronous=NORMAL)]
//   [--hold true|false (BRIDGE_HOLD_FOR_SYNC)]
//
// Runs the service (node dist/src/main.js) against its own dev server, database and KeyDB db index,
// feeds it messages at a fixed rate, and for K consecutive minute boundaries records when the balances
// reached KeyDB: (1) the SyncBalances result's writeOffsetMs, (2) independently, the first time a
// poller sees a sentinel provider's key change (a row is inserted for it 4 s before the boundary).
import { Client, Connection } from '@temporalio/client';
import { Redis } from 'ioredis';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { spawnApp } from './lib/app-process.js';
import { publishToRowLatency, startPaced } from './lib/paced.js';
import {
  commandVersion,
  createBenchDatabase,
  deleteQueues,
  dropBenchDatabase,
  REDIS_BASE_URL,
  startDevServer,
  waitForServices,
} from './lib/services.js';
import {
  pollForChange,
  timelineCell,
  waitUntil,
  workflowResult,
  type SyncTimeline,
} from './lib/sync-observation.js';
import { measureCeiling, startBenchWorker, workflowBacklog } from './lib/temporal-load.js';
import {
  CpuMeter,
  fmt,
  machineDescription,
  options,
  progress,
  report,
  sleep,
  summarize,
  table,
} from './lib/util.js';

const opts = options({
  minutes: 30,
  rate: 0,
  providers: 1000,
  lead: 5,
  variant: 'service',
  database: '',
  keydbDb: 0,
  ingest: true,
  server: 'memory',
  hold: true,
});

const MINUTE = 60_000;
const commit = commandVersion('git', ['rev-parse', '--short', 'HEAD']);
if (!['service', 'shared', 'split'].includes(opts.variant)) {
  throw new Error('--variant is service, shared or split');
}
if (!['memory', 'file'].includes(opts.server)) throw new Error('--server is memory or file');
// service: node dist/src/main.js as it is. shared / split: bench/variant-app.ts with the sync on the
// ingest task queue / on its own task queue, to compare the two layouts in one run.
const split = opts.variant === 'split';
const benchAssembly = opts.variant !== 'service';
const NAME = `bench-sync-${opts.variant}`;
const database = opts.database || `balance_sync_bench_sync_${opts.variant}`;
const keydbDb = opts.keydbDb || { service: 13, shared: 10, split: 11 }[opts.variant]!;
const sentinelId = opts.providers; // messages use providers 1..providers-1
const sentinelKey = `${sentinelId}_provider${sentinelId}`;

interface Observation {
  boundary: string;
  /** From the workflow result. */
  writeOffsetMs: number | null;
  readMs: number | null;
  writeMs: number | null;
  /** From polling KeyDB: first sighting of the new sentinel value minus the boundary. */
  polledOffsetMs: number | null;
  /** When the sentinel row committed, minus the boundary (it should be about -4000). */
  sentinelCommittedMs: number;
  /** Schedule action taken minus scheduled (how late the schedule fired). */
  fireLagMs: number | null;
  machineBusy: number;
  machineSteal: number;
  load1: number;
  /** Workflow tasks waiting on the service's task queue 4 s before the boundary, and the oldest's age. */
  backlog: number | null;
  backlogAgeS: number | null;
  /** IngestTransaction runs unfinished 4 s before the boundary (what the bridge's throttle counts). */
  ingestRunning: number | null;
  /** The run's history, each event's time minus the boundary (ms): where a late minute lost its time. */
  timeline: SyncTimeline | null;
}

let stopRequested = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    progress(`${signal}: finishing the current minute and reporting what was measured`);
    stopRequested = true;
  });
}

await waitForServices();
// file: the dev server as compose and the README start it (SQLite file, WAL, synchronous=NORMAL).
const serverDir = opts.server === 'file' ? await mkdtemp(join(tmpdir(), 'bench-sync-temporal-')) : undefined;
const server = await startDevServer(serverDir ? { dbFile: join(serverDir, 'temporal.db') } : {});
const databaseUrl = await createBenchDatabase(database, opts.providers);
const pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
pool.on('error', (error) => progress(`idle Postgres client failed: ${error.message}`));
const keydbUrl = `${REDIS_BASE_URL}/${keydbDb}`;
const keydb = new Redis(keydbUrl);
keydb.on('error', (error: Error) => progress(`KeyDB: ${error.message}`));
await keydb.flushdb();
const queue = `${NAME}.incoming_transactions`;
await deleteQueues(queue, `${queue}.dead`);
const hardStop = setTimeout(
  () => {
    progress('hard time limit reached; exiting');
    process.exit(3);
  },
  (opts.minutes + 5) * MINUTE,
);
hardStop.unref();

let rate = opts.ingest ? opts.rate : 0;
let ceiling: number | null = null;
if (opts.ingest && rate <= 0) {
  const worker = await startBenchWorker(server.address, 'bench-sync-ceiling', pool);
  const { best } = await measureCeiling(worker, {
    concurrencies: [20],
    durationMs: 8000,
    eager: [true],
    tag: 'sync-ceiling',
  });
  await worker.stop();
  ceiling = best.rate;
  rate = Math.max(1, Math.round(ceiling / 2));
}
progress(`ingest rate during the run: ${rate} msg/s${ceiling ? ` (ceiling ${ceiling.toFixed(1)})` : ''}`);
const client = new Client({ connection: await Connection.connect({ address: server.address }) });

const app = spawnApp({
  temporalAddress: server.address,
  databaseUrl,
  keydbUrl,
  name: NAME,
  env: {
    SYNC_LEAD_SECONDS: String(opts.lead),
    BENCH_QUEUE_LAYOUT: opts.variant,
    BRIDGE_HOLD_FOR_SYNC: String(opts.hold),
  },
  ...(benchAssembly ? { script: 'dist/bench/variant-app.js' } : {}),
});
await app.waitForLog('consuming');
progress(`app ${app.pid} consuming`);
const prefix = `sync-${Date.now()}`;
const paced = opts.ingest ? await startPaced(queue, prefix, rate, opts.providers - 1) : undefined;
const schedule = client.schedule.getHandle(`${NAME}-sync`);

const observations: Observation[] = [];
let boundary = Math.ceil((Date.now() + 6000) / MINUTE) * MINUTE;
for (let k = 0; k < opts.minutes && !stopRequested; k++, boundary += MINUTE) {
  await waitUntil(boundary - 4000);
  const meter = new CpuMeter({});
  const backlog = await workflowBacklog(client, NAME).catch(() => undefined);
  const ingestRunning = await client.workflow
    .count(`WorkflowType = 'IngestTransaction' AND ExecutionStatus = 'Running'`)
    .then(({ count }) => count)
    .catch(() => null);
  const before = await keydb.get(sentinelKey);
  await pool.query('INSERT INTO historical_transactions (provider_id, transaction_value) VALUES ($1, 1)', [
    sentinelId,
  ]);
  // A sentinel committed after the boundary is not this minute's to publish: no change is then expected.
  const sentinelCommittedMs = Date.now() - boundary;
  await waitUntil(boundary - 2500);
  const seenAt = await pollForChange(keydb, sentinelKey, before, boundary + 15_000);
  const cpu = await meter.stop();
  await waitUntil(boundary + 2000);
  const fromWorkflow = await workflowResult(client, schedule, opts.lead, boundary).catch((error: unknown) => {
    progress(`no workflow result for ${new Date(boundary).toISOString()}: ${(error as Error).message}`);
    return undefined;
  });
  const observation: Observation = {
    boundary: new Date(boundary).toISOString(),
    writeOffsetMs: fromWorkflow?.result?.writeOffsetMs ?? null,
    readMs: fromWorkflow?.result?.readMs ?? null,
    writeMs: fromWorkflow?.result?.writeMs ?? null,
    polledOffsetMs: seenAt === null ? null : seenAt - boundary,
    fireLagMs: fromWorkflow?.fireLagMs ?? null,
    sentinelCommittedMs,
    machineBusy: cpu.machineBusy,
    machineSteal: cpu.machineSteal,
    load1: loadavg()[0]!,
    backlog: backlog?.count ?? null,
    backlogAgeS: backlog?.ageSeconds ?? null,
    ingestRunning,
    timeline: fromWorkflow?.timeline ?? null,
  };
  observations.push(observation);
  progress(
    `minute ${k + 1}/${opts.minutes} ${observation.boundary}: writeOffset ${fmt(observation.writeOffsetMs)} ms, ` +
      `polled ${fmt(observation.polledOffsetMs)} ms (sentinel committed at ${sentinelCommittedMs} ms), read ${fmt(observation.readMs, 2)} ms, ` +
      `write ${fmt(observation.writeMs, 2)} ms, fire lag ${fmt(observation.fireLagMs)} ms, ` +
      `busy ${(cpu.machineBusy * 100).toFixed(0)}%, load ${observation.load1.toFixed(1)}, ` +
      `backlog ${fmt(observation.backlog)} tasks / ${fmt(observation.backlogAgeS)} s, ingest running ${fmt(ingestRunning)}, ` +
      `run started / task started / activity scheduled / started ${timelineCell(observation.timeline)}`,
  );
}

const { sent, seconds } = (await paced?.stop()) ?? { sent: 0, seconds: 0 };
progress(`published ${sent} messages in ${seconds.toFixed(0)} s; letting the backlog drain`);
const drainDeadline = Date.now() + 180_000;
while (Date.now() < drainDeadline) {
  const { rows } = await pool.query<{ n: string }>('SELECT count(*) AS n FROM balance_sync_ingest_ledger');
  if (Number(rows[0]!.n) >= sent) break;
  await sleep(500);
}
const ingest = await publishToRowLatency(pool, prefix, paced?.sentAt ?? new Map<string, number>());
await app.stop();
await client.connection.close();
await pool.end();
await keydb.flushdb();
keydb.disconnect();
await deleteQueues(queue, `${queue}.dead`);
await server.stop();
if (serverDir) await rm(serverDir, { recursive: true, force: true });
await dropBenchDatabase(database);

const done = (values: (number | null)[]) => values.filter((value): value is number => value !== null);
const offsets = summarize(done(observations.map((o) => o.writeOffsetMs)));
const polled = summarize(done(observations.map((o) => o.polledOffsetMs)));
const read = summarize(done(observations.map((o) => o.readMs)));
const write = summarize(done(observations.map((o) => o.writeMs)));
const lag = summarize(done(observations.map((o) => o.fireLagMs)));
const missed = observations.filter((o) => o.polledOffsetMs === null).length;

process.stdout.write(`\n## Sync precision (${new Date().toISOString()})\n\n`);
process.stdout.write(
  `Machine: ${machineDescription()}. Dev server ${opts.server === 'file' ? 'on a SQLite file (WAL, synchronous=NORMAL)' : 'in memory'}. Variant ${opts.variant}${benchAssembly ? ` (bench/variant-app.ts, ${split ? 'SyncBalances on its own task queue' : 'SyncBalances on the ingest task queue'})` : ` (node dist/src/main.js at ${commit})`}. ${observations.length} boundaries, SYNC_LEAD_SECONDS=${opts.lead}, ` +
    `${opts.providers} providers, ingest ${rate} msg/s${ceiling ? ` (half of the ${ceiling.toFixed(1)} wf/s ceiling measured first)` : ''}, BRIDGE_HOLD_FOR_SYNC=${String(opts.hold)}; ` +
    `${missed} boundaries without a KeyDB change.\n`,
);
report(
  'Write offset after the minute boundary (ms)',
  table(
    ['measure', 'n', 'p50', 'p90', 'p99', 'max', 'min', 'target'],
    [
      [
        'writeOffsetMs (workflow result)',
        offsets.n,
        offsets.p50,
        offsets.p90,
        offsets.p99,
        offsets.max,
        offsets.min,
        'p99 ≤ 200, max < 1000',
      ],
      [
        'KeyDB sentinel change (polled, 1 ms)',
        polled.n,
        polled.p50,
        polled.p90,
        polled.p99,
        polled.max,
        polled.min,
        'p99 ≤ 200, max < 1000',
      ],
      ['read (Postgres), ms', read.n, read.p50, read.p90, read.p99, read.max, read.min, ''],
      ['write (MULTI/EXEC), ms', write.n, write.p50, write.p90, write.p99, write.max, write.min, ''],
      [
        'schedule fire lag, ms',
        lag.n,
        lag.p50,
        lag.p90,
        lag.p99,
        lag.max,
        lag.min,
        `< ${opts.lead * 1000} (the lead)`,
      ],
    ],
  ),
);
report(
  'Ingest during the run (publish to row, ms)',
  table(
    ['rate msg/s', 'messages', 'rows', 'p50', 'p99', 'max'],
    [[rate, sent, ingest.latency.n, ingest.latency.p50, ingest.latency.p99, ingest.latency.max]],
  ),
);
report(
  'Every boundary',
  table(
    [
      'boundary',
      'writeOffsetMs',
      'polled',
      'sentinel committed',
      'read ms',
      'write ms',
      'fire lag ms',
      'busy %',
      'steal %',
      'load1',
      'wf task backlog',
      'oldest task s',
      'ingest runs unfinished',
      'run started / first task / activity scheduled / activity started, ms',
    ],
    observations.map((o) => [
      o.boundary,
      fmt(o.writeOffsetMs),
      fmt(o.polledOffsetMs),
      fmt(o.sentinelCommittedMs),
      fmt(o.readMs, 2),
      fmt(o.writeMs, 2),
      fmt(o.fireLagMs),
      (o.machineBusy * 100).toFixed(0),
      (o.machineSteal * 100).toFixed(1),
      o.load1.toFixed(1),
      fmt(o.backlog),
      fmt(o.backlogAgeS),
      fmt(o.ingestRunning),
      timelineCell(o.timeline),
    ]),
  ),
);
process.exit(0);
