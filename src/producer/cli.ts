import { ConfigError, loadConfig, redactUrl } from '../config.js';
import { createPool } from '../postgres/pools.js';
import { parseProducerOptions, USAGE, UsageError } from './options.js';
import { runProducer } from './producer.js';

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  signal?: AbortSignal;
}

/**
 * `npm run produce`: progress on stderr, a JSON summary on stdout at the end. Resolves to the exit
 * status: 0 done, 1 failed (or some message not confirmed), 2 bad usage or configuration.
 */
export async function runProducerCli(argv: string[], env: NodeJS.ProcessEnv, io: CliIo): Promise<number> {
  let options;
  let config;
  try {
    options = parseProducerOptions(argv, env);
    if (options.help) {
      io.stdout(USAGE);
      return 0;
    }
    config = loadConfig(env);
  } catch (error) {
    if (error instanceof UsageError || error instanceof ConfigError) {
      io.stderr(
        `produce: ${error.message}${error instanceof UsageError ? ' (npm run produce -- --help)' : ''}\n`,
      );
      return 2;
    }
    throw error;
  }
  const log = (line: string) => io.stderr(`produce: ${line}\n`);
  const pool = createPool(config.DATABASE_URL, 'producer', (error) =>
    log(`idle Postgres client failed: ${error.message}`),
  );
  try {
    log(`postgres ${redactUrl(config.DATABASE_URL)}, rabbitmq ${redactUrl(config.RABBITMQ_URL)}`);
    const summary = await runProducer(options, {
      pool,
      rabbitmqUrl: config.RABBITMQ_URL,
      queue: options.queue ?? config.INCOMING_QUEUE,
      log,
      ...(io.signal ? { signal: io.signal } : {}),
    });
    log(
      `done: ${summary.published} message(s) confirmed (${summary.bad} malformed), ${summary.failed} failed, in ${summary.seconds.toFixed(1)} s`,
    );
    io.stdout(`${JSON.stringify(summary)}\n`);
    return summary.failed > 0 ? 1 : 0;
  } catch (error) {
    log(`failed: ${(error as Error).message}`);
    return 1;
  } finally {
    await pool.end();
  }
}
