// Runs the real service (`node dist/src/main.js`) as a child process with bench settings.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve, sep } from 'node:path';
import { createInterface } from 'node:readline';
import { REPO_ROOT } from './services.js';
import { progress, trackChild } from './util.js';

export interface AppSettings {
  temporalAddress: string;
  databaseUrl: string;
  keydbUrl: string;
  /** Names are derived from it: queue `<name>.incoming_transactions`, task queue, schedule ids. */
  name: string;
  env?: Record<string, string>;
  /** The entrypoint, relative to the app's root (the repository, or BENCH_APP_ROOT); the service's by default. */
  script?: string;
  /** Without `npm start`'s node flags and environment (see startCommand); with them by default. */
  bare?: boolean;
  /** More node flags, e.g. `--cpu-prof` (which NODE_OPTIONS does not accept). */
  nodeArgs?: string[];
}

/**
 * A variant's `BENCH_APP_ROOT=/path` runs the service built in another checkout (a baseline commit
 * in a git worktree, built there), so two versions drain side by side in one run.
 */
const appRoot = (settings: AppSettings) => {
  const root = settings.env?.BENCH_APP_ROOT;
  return root ? `${resolve(root)}${sep}` : REPO_ROOT;
};

/**
 * The node flags and environment assignments of package.json's `start` script (the same as the
 * Dockerfile's CMD and ENV), e.g. `MALLOC_ARENA_MAX=2 node --max-old-space-size=384 dist/src/main.js`,
 * so the benches measure the process as it is deployed and not a bare `node dist/src/main.js`.
 */
export function startCommand(packageJsonPath = `${REPO_ROOT}package.json`): {
  env: Record<string, string>;
  nodeArgs: string[];
} {
  const packageJson = JSON.parse(readFileSync(packageJsonPath, 'utf8')) as {
    scripts: { start: string };
  };
  const words = packageJson.scripts.start.split(/\s+/);
  const node = words.indexOf('node');
  const env = Object.fromEntries(
    // `MALLOC_ARENA_MAX=2 exec node …`: the assignments before `node`, not `exec`.
    words
      .slice(0, node)
      .filter((word) => word.includes('='))
      .map((word) => {
        const at = word.indexOf('=');
        return [word.slice(0, at), word.slice(at + 1)];
      }),
  );
  return { env, nodeArgs: words.slice(node + 1).filter((word) => word.startsWith('--')) };
}

export interface AppProcess {
  pid: number;
  child: ChildProcess;
  spawnedAt: number;
  /** Epoch ms at which each log message was first seen (pino `time`), by message text. */
  logTimes: Map<string, number>;
  /** The first log entry of each message text, whole. */
  firstLogs: Map<string, Record<string, unknown>>;
  /** Resolves with the epoch ms of the first log line whose msg is `message`. */
  waitForLog(message: string, timeoutMs?: number): Promise<number>;
  stop(): Promise<void>;
}

export function appEnv(settings: AppSettings): Record<string, string> {
  return {
    TEMPORAL_ADDRESS: settings.temporalAddress,
    DATABASE_URL: settings.databaseUrl,
    KEYDB_URL: settings.keydbUrl,
    INCOMING_QUEUE: `${settings.name}.incoming_transactions`,
    DEAD_LETTER_QUEUE: `${settings.name}.incoming_transactions.dead`,
    TEMPORAL_TASK_QUEUE: settings.name,
    SYNC_SCHEDULE_ID: `${settings.name}-sync`,
    RECONCILE_SCHEDULE_ID: `${settings.name}-reconcile`,
    HTTP_PORT: '0',
    TEMPORAL_METRICS_PORT: '0',
    LOG_LEVEL: 'info',
    STARTUP_WAIT_SECONDS: '30',
    ...settings.env,
  };
}

export function spawnApp(settings: AppSettings): AppProcess {
  const root = appRoot(settings);
  const launch = settings.bare ? { env: {}, nodeArgs: [] } : startCommand(`${root}package.json`);
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    ...launch.env,
    ...appEnv(settings),
  };
  const spawnedAt = Date.now();
  const script = `${root}${settings.script ?? 'dist/src/main.js'}`;
  const child = spawn(process.execPath, [...launch.nodeArgs, ...(settings.nodeArgs ?? []), script], {
    env,
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  trackChild(child);
  const logTimes = new Map<string, number>();
  const firstLogs = new Map<string, Record<string, unknown>>();
  const waiters = new Map<string, ((time: number) => void)[]>();
  const tail: string[] = [];
  createInterface({ input: child.stdout }).on('line', (line) => {
    let entry: { msg?: string; time?: number; level?: number };
    try {
      entry = JSON.parse(line);
    } catch {
      return;
    }
    if (!entry.msg) return;
    if ((entry.level ?? 0) >= 40) {
      const { msg, err, error, writeOffsetMs, workflowType, activityType, attempt, boundary } =
        entry as Record<string, unknown>;
      // The SDK's own lines ("Activity failed") carry the failure as `error`.
      const why = (error as { message?: unknown } | undefined)?.message ?? error;
      const detail = JSON.stringify({
        err,
        error: why,
        writeOffsetMs,
        workflowType,
        activityType,
        attempt,
        boundary,
      });
      progress(`app ${child.pid} ${entry.level === 40 ? 'warn' : 'error'}: ${String(msg)} ${detail}`);
    }
    if (!logTimes.has(entry.msg)) {
      logTimes.set(entry.msg, entry.time ?? Date.now());
      firstLogs.set(entry.msg, entry);
    }
    for (const resolve of waiters.get(entry.msg) ?? []) resolve(entry.time ?? Date.now());
    waiters.delete(entry.msg);
  });
  createInterface({ input: child.stderr }).on('line', (line) => {
    tail.push(line);
    if (tail.length > 20) tail.shift();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    pid: child.pid!,
    child,
    spawnedAt,
    logTimes,
    firstLogs,
    waitForLog(message, timeoutMs = 60_000) {
      const seen = logTimes.get(message);
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`app never logged "${message}"; stderr: ${tail.join('\n')}`)),
          timeoutMs,
        );
        void exited.then(() => {
          clearTimeout(timer);
          reject(new Error(`app exited (${child.exitCode}) before "${message}"; stderr: ${tail.join('\n')}`));
        });
        const list = waiters.get(message) ?? [];
        list.push((time) => {
          clearTimeout(timer);
          resolve(time);
        });
        waiters.set(message, list);
      });
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * A counter's value by one label from the app's /metrics (its HTTP port from its start-up log), summed
 * over apps (or their largest, `max`); without `label`, the unlabelled counter's value under the key ''.
 */
export async function appCounter(
  apps: AppProcess[],
  name: string,
  label?: string,
  combine: 'sum' | 'max' = 'sum',
): Promise<Record<string, number>> {
  const sums: Record<string, number> = {};
  for (const app of apps) {
    const port = app.firstLogs.get('http endpoints ready')?.port;
    if (typeof port !== 'number') continue;
    const body = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const line = label ? `^${name}\\{${label}="([^"]*)"\\} (\\S+)$` : `^${name}()(?:\\{\\})? (\\S+)$`;
    for (const match of body.matchAll(new RegExp(line, 'gm')))
      sums[match[1]!] =
        combine === 'max'
          ? Math.max(sums[match[1]!] ?? 0, Number(match[2]))
          : (sums[match[1]!] ?? 0) + Number(match[2]);
  }
  return sums;
}
