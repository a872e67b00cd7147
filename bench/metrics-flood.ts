// npm run bench:metrics-flood -- [--minutes 6] [--concurrency 100] [--lead 5]
//
// Does a flood of /metrics scrapes delay the minute's KeyDB write? Runs the service (node
// dist/src/main.js, the Temporal Runtime's exporter on) against its own dev server, database and KeyDB
// db index, and measures consecutive minute boundaries, alternately quiet and flooded: in a flooded
// minute `concurrency` clients scrape /metrics in a loop (each a new request as soon as the last
// answered) from 30 s before the boundary to 30 s after it. Each boundary's write is measured as in
// bench:sync-precision: the SyncBalances result's writeOffsetMs and a poller's first sighting of a
// sentinel key's change (its row inserted 4 s before the boundary).
import { Client, Connection } from '@temporalio/client';
import { Redis } from 'ioredis';
import { Agent, get } from 'node:http';
import { loadavg } from 'node:os';
import pg from 'pg';
import { spawnApp } from './lib/app-process.js';
import {
  commandVersion,
  createBenchDatabase,
  deleteQueues,
  dropBenchDatabase,
  freePort,
  REDIS_BASE_URL,
  startDevServer,
  waitForServices,
} from './lib/services.js';
import { pollForChange, waitUntil, workflowResult } from './lib/sync-observation.js';
import {
  CpuMeter,
  fmt,
  machineDescription,
  options,
  progress,
  report,
  summarize,
  table,
} from './lib/util.js';

const opts = options({ minutes: 6, concurrency: 100, providers: 1000, lead: 5, keydbDb: 9 });

const MINUTE = 60_000;
const FLOOD_BEFORE_MS = 30_000;
const FLOOD_AFTER_MS = 30_000;
const NAME = 'bench-metrics-flood';
const database = 'balance_sync_bench_metrics_flood';
const commit = commandVersion('git', ['rev-parse', '--short', 'HEAD']);
const sentinelId = opts.providers;
const sentinelKey = `${sentinelId}_provider${sentinelId}`;

interface Flood {
  scrapes: number;
  failures: number;
  latenciesMs: number[];
  bytes: number;
}

/** `concurrency` clients scraping `url` in a loop until stopped. */
function startFlood(url: string, concurrency: number) {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const flood: Flood = { scrapes: 0, failures: 0, latenciesMs: [], bytes: 0 };
  let stopping = false;
  const scrape = () =>
    new Promise<void>((resolve) => {
      const started = performance.now();
      get(url, { agent }, (response) => {
        let bytes = 0;
        response.on('data', (chunk: Buffer) => (bytes += chunk.length));
        response.on('end', () => {
          if (response.statusCode === 200) {
            flood.scrapes++;
            flood.bytes += bytes;
            flood.latenciesMs.push(performance.now() - started);
          } else flood.failures++;
          resolve();
        });
      }).on('error', () => {
        flood.failures++;
        resolve();
      });
    });
  const clients = Array.from({ length: concurrency }, async () => {
    while (!stopping) await scrape();
  });
  return {
    async stop(): Promise<Flood> {
      stopping = true;
      await Promise.all(clients);
      agent.destroy();
      return flood;
    },
  };
}

interface Observation {
  boundary: string;
  flooded: boolean;
  writeOffsetMs: number | null;
  polledOffsetMs: number | null;
  fireLagMs: number | null;
  scrapesPerSecond: number | null;
  scrapeP50Ms: number | null;
  scrapeP99Ms: number | null;
  scrapeFailures: number | null;
  appCpu: number;
  machineBusy: number;
  load1: number;
}

await waitForServices();
const server = await startDevServer();
const databaseUrl = await createBenchDatabase(database, opts.providers);
const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
pool.on('error', (error) => progress(`idle Postgres client failed: ${error.message}`));
const keydb = new Redis(`${REDIS_BASE_URL}/${opts.keydbDb}`);
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

const httpPort = await freePort();
const app = spawnApp({
  temporalAddress: server.address,
  databaseUrl,
  keydbUrl: `${REDIS_BASE_URL}/${opts.keydbDb}`,
  name: NAME,
  env: {
    SYNC_LEAD_SECONDS: String(opts.lead),
    HTTP_PORT: String(httpPort),
    TEMPORAL_METRICS_PORT: String(await freePort()),
  },
});
await app.waitForLog('consuming');
progress(`app ${app.pid} consuming; /metrics on port ${httpPort}`);
const client = new Client({ connection: await Connection.connect({ address: server.address }) });
const schedule = client.schedule.getHandle(`${NAME}-sync`);
const metricsUrl = `http://127.0.0.1:${httpPort}/metrics`;
const oneScrape = await (await fetch(metricsUrl)).text();
progress(`one /metrics answer: ${oneScrape.length} bytes`);

const observations: Observation[] = [];
// A quiet minute first; the first flooded one starts its flood 30 s after it.
let boundary = Math.ceil((Date.now() + 6000) / MINUTE) * MINUTE;
for (let k = 0; k < opts.minutes; k++, boundary += MINUTE) {
  const flooded = k % 2 === 1;
  let flood: ReturnType<typeof startFlood> | undefined;
  let floodStartedMs = 0;
  if (flooded) {
    await waitUntil(boundary - FLOOD_BEFORE_MS);
    floodStartedMs = performance.now();
    flood = startFlood(metricsUrl, opts.concurrency);
  }
  await waitUntil(boundary - 4000);
  const meter = new CpuMeter({ app: () => [app.pid] });
  const before = await keydb.get(sentinelKey);
  await pool.query('INSERT INTO historical_transactions (provider_id, transaction_value) VALUES ($1, 1)', [
    sentinelId,
  ]);
  await waitUntil(boundary - 2500);
  const seenAt = await pollForChange(keydb, sentinelKey, before, boundary + 15_000);
  const cpu = await meter.stop();
  let floodResult: Flood | undefined;
  if (flood) {
    await waitUntil(boundary + FLOOD_AFTER_MS);
    floodResult = await flood.stop();
  } else await waitUntil(boundary + 2000);
  const floodSeconds = (performance.now() - floodStartedMs) / 1000;
  const fromWorkflow = await workflowResult(client, schedule, opts.lead, boundary).catch((error: unknown) => {
    progress(`no workflow result for ${new Date(boundary).toISOString()}: ${(error as Error).message}`);
    return undefined;
  });
  const latency = floodResult ? summarize(floodResult.latenciesMs) : undefined;
  const observation: Observation = {
    boundary: new Date(boundary).toISOString(),
    flooded,
    writeOffsetMs: fromWorkflow?.result?.writeOffsetMs ?? null,
    polledOffsetMs: seenAt === null ? null : seenAt - boundary,
    fireLagMs: fromWorkflow?.fireLagMs ?? null,
    scrapesPerSecond: floodResult ? floodResult.scrapes / floodSeconds : null,
    scrapeP50Ms: latency?.p50 ?? null,
    scrapeP99Ms: latency?.p99 ?? null,
    scrapeFailures: floodResult?.failures ?? null,
    appCpu: (cpu.processes.app ?? 0) / cpu.seconds,
    machineBusy: cpu.machineBusy,
    load1: loadavg()[0]!,
  };
  observations.push(observation);
  progress(
    `minute ${k + 1}/${opts.minutes} ${observation.boundary} ${flooded ? 'FLOODED' : 'quiet'}: ` +
      `writeOffset ${fmt(observation.writeOffsetMs)} ms, polled ${fmt(observation.polledOffsetMs)} ms` +
      (floodResult
        ? `, ${fmt(observation.scrapesPerSecond)} scrapes/s (p50 ${fmt(observation.scrapeP50Ms)}, p99 ${fmt(observation.scrapeP99Ms)} ms, ${floodResult.failures} failed)`
        : '') +
      `, app CPU ${(observation.appCpu * 100).toFixed(0)}%, busy ${(cpu.machineBusy * 100).toFixed(0)}%, load ${observation.load1.toFixed(1)}`,
  );
}

await app.stop();
await client.connection.close();
await pool.end();
await keydb.flushdb();
keydb.disconnect();
await deleteQueues(queue, `${queue}.dead`);
await server.stop();
await dropBenchDatabase(database);

const done = (values: (number | null)[]) => values.filter((value): value is number => value !== null);
const row = (label: string, values: (number | null)[]) => {
  const s = summarize(done(values));
  return [label, s.n, s.p50, s.p99, s.max, s.min, 'max ≤ 200'];
};
const quiet = observations.filter((o) => !o.flooded);
const flooded = observations.filter((o) => o.flooded);
process.stdout.write(`\n## /metrics flood (${new Date().toISOString()})\n\n`);
process.stdout.write(
  `Machine: ${machineDescription()}, load average ${loadavg()
    .map((l) => l.toFixed(1))
    .join(' / ')} at the end. Node ${process.version}; node dist/src/main.js at ${commit}, ` +
    `Temporal Runtime exporter on; ${observations.length} boundaries (${flooded.length} flooded by ` +
    `${opts.concurrency} concurrent scrapers for ${(FLOOD_BEFORE_MS + FLOOD_AFTER_MS) / 1000} s around the boundary), ` +
    `SYNC_LEAD_SECONDS=${opts.lead}, ${opts.providers} providers, no ingest; one /metrics answer ${oneScrape.length} bytes.\n`,
);
report(
  'Write offset after the minute boundary (ms)',
  table(
    ['measure', 'n', 'p50', 'p99', 'max', 'min', 'target'],
    [
      row(
        'writeOffsetMs, quiet',
        quiet.map((o) => o.writeOffsetMs),
      ),
      row(
        'writeOffsetMs, flooded',
        flooded.map((o) => o.writeOffsetMs),
      ),
      row(
        'sentinel polled, quiet',
        quiet.map((o) => o.polledOffsetMs),
      ),
      row(
        'sentinel polled, flooded',
        flooded.map((o) => o.polledOffsetMs),
      ),
    ],
  ),
);
report(
  'Every boundary',
  table(
    [
      'boundary',
      'flood',
      'writeOffsetMs',
      'polled',
      'fire lag ms',
      'scrapes/s',
      'scrape p50 / p99 ms',
      'failed scrapes',
      'app CPU % (−4 s … write)',
      'machine busy %',
      'load1',
    ],
    observations.map((o) => [
      o.boundary,
      o.flooded ? 'yes' : 'no',
      fmt(o.writeOffsetMs),
      fmt(o.polledOffsetMs),
      fmt(o.fireLagMs),
      fmt(o.scrapesPerSecond),
      o.flooded ? `${fmt(o.scrapeP50Ms)} / ${fmt(o.scrapeP99Ms)}` : '–',
      fmt(o.scrapeFailures),
      (o.appCpu * 100).toFixed(0),
      (o.machineBusy * 100).toFixed(0),
      o.load1.toFixed(1),
    ]),
  ),
);
process.exit(0);
