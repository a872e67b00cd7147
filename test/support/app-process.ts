import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from '../../src/config.js';
import { freePort } from './dev-server.js';
import { waitFor } from './harness.js';

export const MAIN_JS = fileURLToPath(new URL('../../dist/src/main.js', import.meta.url));

export interface AppProcess {
  child: ChildProcess;
  httpPort: number;
  /** Every line the process printed, stdout and stderr. */
  lines: string[];
  exited: Promise<number | null>;
  waitForLine(what: string, predicate: (line: string) => boolean, timeoutMs?: number): Promise<string>;
  /** GET on the process's HTTP port. */
  get(path: string): Promise<{ status: number; body: string }>;
  kill(signal: NodeJS.Signals): Promise<number | null>;
}

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface SpawnOptions {
  /** Write the settings to `.env` in this directory and run there, with only extraEnv in the environment. */
  dotEnvIn?: string;
  /** Run `npm start` from the repository root instead of `node dist/src/main.js`. */
  npmStart?: boolean;
  /** Own process group (child.pid is its id), as a terminal gives a foreground job. */
  detached?: boolean;
  /** Run `node dist/src/main.js` under this command, e.g. `['faketime', '-f', '+20s']`. */
  wrapper?: string[];
}

/**
 * Runs the real entrypoint (`node dist/src/main.js`, what `npm start` and the image run) with only
 * `config` (free HTTP and metrics ports, LOG_LEVEL info) and `extraEnv` in its environment.
 */
export async function spawnApp(
  config: Config,
  extraEnv: Record<string, string> = {},
  options: SpawnOptions = {},
): Promise<AppProcess> {
  const settings: Record<string, string> = {
    ...Object.fromEntries(Object.entries(config).map(([key, value]) => [key, String(value)])),
    HTTP_PORT: String(await freePort()),
    TEMPORAL_METRICS_PORT: String(await freePort()),
    LOG_LEVEL: 'info',
  };
  if (options.dotEnvIn) {
    const lines = Object.entries(settings).map(([key, value]) => `${key}=${JSON.stringify(value)}`);
    writeFileSync(join(options.dotEnvIn, '.env'), `# written by spawnApp\n${lines.join('\n')}\n`);
  }
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '/root',
    ...(options.dotEnvIn ? {} : settings),
    ...extraEnv,
  };
  const httpPort = Number(env.HTTP_PORT ?? settings.HTTP_PORT);
  const [command, ...args] = options.npmStart
    ? ['npm', 'start', '--silent']
    : [...(options.wrapper ?? []), process.execPath, MAIN_JS];
  // A wrapper (faketime) forks node and dies alone on SIGKILL: it runs in a group of its own, and a
  // kill reaches the whole group, so no app outlives its test.
  const wrapped = options.wrapper !== undefined;
  const child = spawn(command, args, {
    env: options.npmStart ? { ...env, npm_config_update_notifier: 'false' } : env,
    cwd: options.npmStart ? REPO_ROOT : options.dotEnvIn,
    detached: (options.detached ?? false) || wrapped,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  for (const stream of [child.stdout, child.stderr]) {
    let partial = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      const parts = (partial + chunk).split('\n');
      partial = parts.pop() ?? '';
      lines.push(...parts);
    });
  }
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const get = async (path: string) => {
    const response = await fetch(`http://127.0.0.1:${httpPort}${path}`);
    return { status: response.status, body: await response.text() };
  };
  return {
    child,
    httpPort,
    lines,
    exited,
    get,
    waitForLine: (what, predicate, timeoutMs = 30_000) =>
      waitFor(what, () => Promise.resolve(lines.find(predicate)), timeoutMs),
    async kill(signal) {
      if (child.exitCode === null && child.signalCode === null) {
        if (wrapped && child.pid !== undefined) process.kill(-child.pid, signal);
        else child.kill(signal);
      }
      return await exited;
    },
  };
}

/** Everything the process printed that is not a JSON log line: what an operator reads on failure. */
export const plainLines = (app: AppProcess) =>
  app.lines.filter((line) => line.trim() !== '' && !line.startsWith('{'));

/** The settings as environment variables, as spawnApp passes them. */
export const asEnv = (config: Config): Record<string, string> =>
  Object.fromEntries(Object.entries(config).map(([key, value]) => [key, String(value)]));

/**
 * Waits until /readyz answers 200; fails at once if the app exits, and on a timeout says what /readyz
 * last answered and what the app last printed.
 */
export async function waitUntilReady(app: AppProcess, timeoutMs = 60_000): Promise<void> {
  let last = 'no answer';
  const outcome = await waitFor(
    'the app to be ready',
    async () => {
      if (app.child.exitCode !== null) return 'exited';
      const { status, body } = await app.get('/readyz');
      last = `${status} ${body}`;
      return status === 200 ? 'ready' : undefined;
    },
    timeoutMs,
  ).catch((error: unknown) => {
    throw new Error(
      `${String(error)}; /readyz last said ${last}; the app last printed:\n${app.lines.slice(-5).join('\n')}`,
    );
  });
  if (outcome === 'exited')
    throw new Error(`app exited with ${app.child.exitCode}: ${app.lines.slice(-5).join('\n')}`);
}

export interface CommandRun {
  status: number | null;
  stdout: string;
  /** stderr without blank lines. */
  errors: string[];
}

/** Runs a command from the repository root with only `env` (plus PATH and HOME) in its environment. */
export async function runCommand(
  command: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<CommandRun> {
  const child = spawn(command, args, {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/root', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const status = await new Promise<number | null>((resolve) => child.once('close', resolve));
  return { status, stdout, errors: stderr.split('\n').filter((line) => line.trim() !== '') };
}
