import { Runtime } from '@temporalio/worker';
import type { Logger } from 'pino';
import { runAsProcess, type CliIo } from './cli.js';
import { ConfigError, portInUseError, type Config } from './config.js';
import { createLogger, temporalLogger } from './logger.js';
import { startApp, type App } from './app.js';
import { temporalConnectOptions } from './temporal-connection.js';

/**
 * The last resort: a shutdown still running this long after the signal exits 1, inside compose's
 * 30 s stop_grace_period whatever is stuck (the bridge waits 15 s at most, the worker 8 s).
 */
const SHUTDOWN_DEADLINE_MS = 27_000;

const USAGE = `Usage: npm start     (or: node dist/src/main.js)

Runs balance-sync: consumes the incoming queue into IngestTransaction workflows, runs their
activities, and keeps the sync and reconcile schedules that publish balances to KeyDB. Settings come
from the environment and .env (see .env.template); a bad one is named on one line, exit 2.
SIGTERM or SIGINT stops it in order, exit 0.

  -h, --help   show this help
`;

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

/** Starts the app, and resolves to the exit status once it stopped (signalled or not). */
function serve(config: Config, log: Logger, io: CliIo): Promise<number> {
  const signal = io.signal!;
  return new Promise((exit, fail) => {
    let app: App | undefined;
    const shutDown = () => {
      log.info({ signal: signal.reason as string }, 'shutting down');
      setTimeout(() => {
        log.error({ afterMs: SHUTDOWN_DEADLINE_MS }, 'shutdown took too long; exiting now');
        exit(1);
      }, SHUTDOWN_DEADLINE_MS).unref();
      // Still starting: nothing is consumed before startApp returns (the bridge starts last). The
      // workers may already run activities; Temporal retries those on another worker or on restart.
      if (!app) return exit(0);
      app.stop().then(
        () => exit(0),
        (error: unknown) => {
          log.error({ err: (error as Error).message }, 'shutdown failed');
          exit(1);
        },
      );
    };
    if (signal.aborted) return shutDown();
    signal.addEventListener('abort', shutDown, { once: true });
    startApp(config, log).then(
      (started) => {
        app = started;
        started.done.then(
          () => {
            if (signal.aborted) return;
            log.error('worker stopped unexpectedly');
            exit(1);
          },
          () => exit(1),
        );
      },
      (error: unknown) => {
        if (error instanceof ConfigError) return fail(error);
        io.stderr(`balance-sync failed to start: ${(error as Error).message}\n`);
        exit(1);
      },
    );
  });
}

/** The one entrypoint: `npm start`, the container and the process-level tests all run this. */
runAsProcess({
  name: 'start',
  // Bare lines: `Invalid configuration: VARIABLE: ...`, as the logs and the tests read them.
  prefix: '',
  usage: USAGE,
  flags: {},
  stopOnSignal: true,
  run({ config, dotEnv, io }) {
    // An unreadable certificate or key file, or a certificate without its key: refused (exit 2) before anything starts.
    temporalConnectOptions(config);
    const log = createLogger(config.LOG_LEVEL);
    if (dotEnv) log.info({ file: dotEnv }, 'settings read from .env; the environment wins over it');
    installRuntime(config, log);
    return serve(config, log, io);
  },
});
