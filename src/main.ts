import { Runtime } from '@temporalio/worker';
import type { Logger } from 'pino';
import { ConfigError, loadConfig, portInUseError, type Config } from './config.js';
import { loadDotEnv } from './env-file.js';
import { createLogger, temporalLogger } from './logger.js';
import { startApp, type App } from './app.js';
import { temporalConnectOptions } from './temporal-connection.js';

/** Exit status for configuration problems (bad value, port taken, unreadable .env). */
const EXIT_CONFIG = 2;
/**
 * The last resort: a shutdown still running this long after the signal exits 1, inside compose's
 * 30 s stop_grace_period whatever is stuck (the bridge waits 15 s at most, the worker 8 s).
 */
const SHUTDOWN_DEADLINE_MS = 27_000;

function readConfig(): { config: Config; dotEnv: string | undefined } {
  try {
    const dotEnv = loadDotEnv();
    const config = loadConfig();
    // An unreadable certificate or a certificate without its key: refused before anything starts.
    temporalConnectOptions(config);
    return { config, dotEnv };
  } catch (error) {
    const message =
      error instanceof ConfigError ? error.message : `Cannot read .env: ${(error as Error).message}`;
    process.stderr.write(`${message}\n`);
    process.exit(EXIT_CONFIG);
  }
}

function installRuntime(config: Config, log: Logger): void {
  try {
    Runtime.install({
      logger: temporalLogger(log),
      // We order the shutdown ourselves: stop consuming before the worker stops.
      shutdownSignals: [],
      telemetryOptions: config.TEMPORAL_METRICS_PORT
        ? { metrics: { prometheus: { bindAddress: `127.0.0.1:${config.TEMPORAL_METRICS_PORT}` } } }
        : {},
    });
  } catch (error) {
    if (/address already in use/i.test((error as Error).message))
      throw portInUseError('TEMPORAL_METRICS_PORT', config.TEMPORAL_METRICS_PORT);
    throw error;
  }
}

/** The one entrypoint: `npm start`, the container and the process-level tests all run this. */
async function main(): Promise<void> {
  const { config, dotEnv } = readConfig();
  const log = createLogger(config.LOG_LEVEL);
  if (dotEnv) log.info({ file: dotEnv }, 'settings read from .env; the environment wins over it');
  installRuntime(config, log);

  const running: { app?: App } = {};
  let signalled = false;
  // `process.on`, not `once`: Ctrl-C under `npm start` delivers SIGINT twice (from the terminal and
  // forwarded by npm), and a second signal must not kill a shutdown in progress.
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      if (signalled) return;
      signalled = true;
      log.info({ signal }, 'shutting down');
      setTimeout(() => {
        log.error({ afterMs: SHUTDOWN_DEADLINE_MS }, 'shutdown took too long; exiting now');
        process.exit(1);
      }, SHUTDOWN_DEADLINE_MS).unref();
      // Still starting: nothing is consumed before startApp returns (the bridge starts last). The
      // workers may already run activities; Temporal retries those on another worker or on restart.
      if (!running.app) process.exit(0);
      running.app.stop().then(
        () => process.exit(0),
        (error: unknown) => {
          log.error({ err: (error as Error).message }, 'shutdown failed');
          process.exit(1);
        },
      );
    });
  }
  const app = await startApp(config, log);
  running.app = app;
  app.done.then(
    () => {
      if (!signalled) {
        log.error('worker stopped unexpectedly');
        process.exit(1);
      }
    },
    () => process.exit(1),
  );
}

main().catch((error: unknown) => {
  if (error instanceof ConfigError) {
    process.stderr.write(`${error.message}\n`);
    process.exit(EXIT_CONFIG);
  }
  process.stderr.write(`balance-sync failed to start: ${(error as Error).message}\n`);
  process.exit(1);
});
