import { Runtime } from '@temporalio/worker';
import { ConfigError, loadConfig } from './config.js';
import { createLogger, temporalLogger } from './logger.js';
import { startApp } from './app.js';

/** The one entrypoint: `npm start`, the container and the process-level tests all run this. */
async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(2);
    }
    throw error;
  }
  const log = createLogger(config.LOG_LEVEL);
  Runtime.install({
    logger: temporalLogger(log),
    // We order the shutdown ourselves: stop consuming before the worker stops.
    shutdownSignals: [],
    telemetryOptions: config.TEMPORAL_METRICS_PORT
      ? { metrics: { prometheus: { bindAddress: `127.0.0.1:${config.TEMPORAL_METRICS_PORT}` } } }
      : {},
  });
  const app = await startApp(config, log);
  let signalled = false;
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      signalled = true;
      log.info({ signal }, 'shutting down');
      app.stop().then(
        () => process.exit(0),
        (error: unknown) => {
          log.error({ err: (error as Error).message }, 'shutdown failed');
          process.exit(1);
        },
      );
    });
  }
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
  process.stderr.write(`balance-sync failed to start: ${(error as Error).message}\n`);
  process.exit(1);
});
