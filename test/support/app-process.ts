import { spawn, type ChildProcess } from 'node:child_process';
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

/** Runs the real entrypoint (`node dist/src/main.js`, what `npm start` and the image run). */
export async function spawnApp(config: Config, extraEnv: Record<string, string> = {}): Promise<AppProcess> {
  const httpPort = await freePort();
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '',
    ...Object.fromEntries(Object.entries(config).map(([key, value]) => [key, String(value)])),
    HTTP_PORT: String(httpPort),
    TEMPORAL_METRICS_PORT: String(await freePort()),
    LOG_LEVEL: 'info',
    ...extraEnv,
  };
  const child = spawn(process.execPath, [MAIN_JS], { env, stdio: ['ignore', 'pipe', 'pipe'] });
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
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return await exited;
    },
  };
}

/** Waits until /readyz answers 200. */
export async function waitUntilReady(app: AppProcess, timeoutMs = 60_000): Promise<void> {
  await waitFor(
    'the app to be ready',
    async () => {
      if (app.child.exitCode !== null)
        throw new Error(`app exited with ${app.child.exitCode}: ${app.lines.slice(-5).join('\n')}`);
      return (await app.get('/readyz')).status === 200 ? true : undefined;
    },
    timeoutMs,
  );
}
