// npm run bench:sync-crash -- [--trials 10] [--window 3000] [--lead 5] [--providers 100] [--keydbDb 3]
//
// Runs two instances of the service (node dist/src/main.js) against their own dev server, database and
// KeyDB db index. For each of `trials` consecutive minutes it SIGKILLs the instance running one of the
// minute's publishBalances writers at a random moment in the last `window` ms before `:00`, and
// measures when the minute reached KeyDB: the fence's `written_at` (KeyDB's TIME at the write) minus
// the boundary. A fresh instance replaces the killed one before the next minute.
import { Client, Connection } from '@temporalio/client';
import { Redis } from 'ioredis';
import { FENCE_KEY } from '../src/keydb/fenced-write.js';
import { liveInstanceQueues } from '../src/keydb/sync-instances.js';
import { spawnApp, type AppProcess } from './lib/app-process.js';
import {
  commandVersion,
  createBenchDatabase,
  dropBenchDatabase,
  deleteQueues,
  REDIS_BASE_URL,
  startDevServer,
  waitForServices,
} from './lib/services.js';
import { waitUntil } from './lib/sync-observation.js';
import { fmt, machineDescription, options, progress, report, sleep, summarize, table } from './lib/util.js';

const opts = options({ trials: 10, window: 3000, lead: 5, providers: 100, keydbDb: 3 });
const MINUTE = 60_000;
const NAME = 'bench-sync-crash';
const database = 'balance_sync_bench_sync_crash';
const commit = commandVersion('git', ['rev-parse', '--short', 'HEAD']);

interface Trial {
  boundary: string;
  killedAtMs: number;
  /** Fence written_at minus the boundary; null when the minute was not written within 15 s. */
  writeOffsetMs: number | null;
  writer: string | null;
}

await waitForServices();
const server = await startDevServer();
const databaseUrl = await createBenchDatabase(database, opts.providers);
const keydbUrl = `${REDIS_BASE_URL}/${opts.keydbDb}`;
const keydb = new Redis(keydbUrl);
await keydb.flushdb();
await deleteQueues(`${NAME}.incoming_transactions`, `${NAME}.incoming_transactions.dead`);
const client = new Client({ connection: await Connection.connect({ address: server.address }) });
const settings = {
  temporalAddress: server.address,
  databaseUrl,
  keydbUrl,
  name: NAME,
  env: { SYNC_LEAD_SECONDS: String(opts.lead) },
};
const syncQueue = `${NAME}-sync`;

async function startInstance(): Promise<AppProcess> {
  const app = spawnApp(settings);
  await app.waitForLog('consuming', 90_000);
  return app;
}

async function twoLive(apps: AppProcess[]): Promise<void> {
  while ((await liveInstanceQueues(keydb, syncQueue)).length !== apps.length) await sleep(100);
}

/** The pid of a worker running a publishBalances attempt of the run for `boundary`. */
async function writerPid(boundary: number): Promise<number | undefined> {
  // A scheduled run's id is the action's workflow id and its nominal time (RFC 3339, seconds).
  const tick = new Date(boundary - opts.lead * 1000).toISOString().replace('.000', '');
  const { raw } = await client.workflow.getHandle(`${NAME}-sync-${tick}`).describe();
  const identity = raw.pendingActivities?.find(
    (a) => a.activityType?.name === 'publishBalances' && a.lastWorkerIdentity,
  )?.lastWorkerIdentity;
  return identity ? Number(identity.split('@')[0]) : undefined;
}

async function fenceWrittenAt(boundary: number, untilMs: number) {
  while (Date.now() < untilMs) {
    const [minute, writtenAt, writer] = await keydb.hmget(FENCE_KEY, 'minute', 'written_at', 'writer');
    if (Number(minute) === boundary) return { writtenAt: Number(writtenAt), writer };
    await sleep(2);
  }
  return undefined;
}

const apps = await Promise.all([startInstance(), startInstance()]);
progress(`instances ${apps.map((app) => app.pid).join(', ')} consuming`);
const trials: Trial[] = [];
for (let k = 0; k < opts.trials; k++) {
  await twoLive(apps);
  const boundary = Math.ceil((Date.now() + opts.lead * 1000 + 3000) / MINUTE) * MINUTE;
  const killAt = boundary - Math.floor(Math.random() * opts.window) - 1;
  await waitUntil(boundary - opts.lead * 1000 + 500);
  let pid: number | undefined;
  while (pid === undefined && Date.now() < killAt - 50) {
    pid = await writerPid(boundary).catch(() => undefined);
    if (pid === undefined) await sleep(50);
  }
  const victim = apps.findIndex((app) => app.pid === pid);
  if (victim < 0)
    throw new Error(`no instance found running a writer for ${new Date(boundary).toISOString()}`);
  await waitUntil(killAt);
  apps[victim]!.child.kill('SIGKILL');
  const killedAt = Date.now();
  const fence = await fenceWrittenAt(boundary, boundary + 15_000);
  const trial: Trial = {
    boundary: new Date(boundary).toISOString(),
    killedAtMs: killedAt - boundary,
    writeOffsetMs: fence ? fence.writtenAt - boundary : null,
    writer: fence?.writer ?? null,
  };
  trials.push(trial);
  progress(
    `trial ${k + 1}/${opts.trials} ${trial.boundary}: killed ${pid} at ${trial.killedAtMs} ms, written at ${fmt(trial.writeOffsetMs)} ms by ${trial.writer}`,
  );
  apps[victim] = await startInstance();
}

await Promise.all(apps.map((app) => app.stop()));
for (const id of [`${NAME}-sync`, `${NAME}-reconcile`])
  await client.schedule
    .getHandle(id)
    .delete()
    .catch(() => undefined);
await client.connection.close();
await keydb.flushdb();
keydb.disconnect();
await deleteQueues(`${NAME}.incoming_transactions`, `${NAME}.incoming_transactions.dead`);
await server.stop();
await dropBenchDatabase(database);

const offsets = summarize(trials.flatMap((t) => (t.writeOffsetMs === null ? [] : [t.writeOffsetMs])));
process.stdout.write(
  `\n## Sync after a crash in the last ${opts.window} ms (${new Date().toISOString()})\n\n`,
);
process.stdout.write(
  `Machine: ${machineDescription()}. Two instances of node dist/src/main.js at ${commit}, SYNC_LEAD_SECONDS=${opts.lead}, ` +
    `${opts.providers} providers, no ingest; ${trials.length} trials, ${trials.filter((t) => t.writeOffsetMs === null).length} minutes not written within 15 s.\n`,
);
report(
  'Write offset after a SIGKILL of a writer instance (fence written_at minus the boundary, ms)',
  table(
    ['n', 'p50', 'p90', 'p99', 'max', 'min', 'target'],
    [[offsets.n, offsets.p50, offsets.p90, offsets.p99, offsets.max, offsets.min, 'p99 ≤ 200']],
  ),
);
report(
  'Every trial',
  table(
    ['boundary', 'killed at ms', 'written at ms', 'writer (run/activity/attempt)'],
    trials.map((t) => [t.boundary, t.killedAtMs, fmt(t.writeOffsetMs), t.writer ?? '']),
  ),
);
process.exit(0);
