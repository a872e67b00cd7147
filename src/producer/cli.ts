import { runCommand, type CliIo, type Command } from '../cli.js';
import { redactUrl, type Config } from '../config.js';
import { createPool } from '../postgres/pools.js';
import { PRODUCER_FLAGS, producerOptions, USAGE, type ProducerOptions } from './options.js';
import { runProducer } from './producer.js';

/**
 * `npm run produce`: progress on stderr, a JSON summary on stdout at the end. Exit status: 0 done,
 * 1 failed (or some message not confirmed), 2 bad usage or configuration.
 */
export const produceCommand: Command<typeof PRODUCER_FLAGS, ProducerOptions> = {
  name: 'produce',
  usage: USAGE,
  flags: PRODUCER_FLAGS,
  parse: producerOptions,
  stopOnSignal: true,
  run: ({ args, config, io }) => produce(args, config, io),
};

/** The producer's command with these arguments and environment; resolves to the exit status. */
export const runProducerCli = (argv: string[], env: NodeJS.ProcessEnv, io: CliIo): Promise<number> =>
  runCommand(produceCommand, argv, env, io);

async function produce(options: ProducerOptions, config: Config, io: CliIo): Promise<number> {
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
