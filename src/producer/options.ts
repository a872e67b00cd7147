import { parseFlags, UsageError, type FlagValues } from '../cli.js';

export { UsageError };

export interface ProducerOptions {
  /** Messages per second; undefined: the original's pace, one message every minDelay..maxDelay s. */
  rate: number | undefined;
  /** Stop after this many messages; undefined: run until stopped. */
  count: number | undefined;
  minDelaySeconds: number;
  maxDelaySeconds: number;
  /** Give every message a unique AMQP message_id (the original sets none). */
  messageIds: boolean;
  /** Fraction of messages, 0..1, replaced by bodies the app must dead-letter. */
  badRatio: number;
  /** Insert the seed rows even when the tables already exist, as the original does on each start. */
  reseed: boolean;
  /** Seconds between progress lines on stderr in rate mode. */
  progressSeconds: number;
  /** A file touched every few seconds while connected to RabbitMQ (container healthcheck). */
  heartbeatFile: string | undefined;
  /** Overrides INCOMING_QUEUE. */
  queue: string | undefined;
  help: boolean;
}

export const USAGE = `Usage: npm run produce -- [options]     (or: node dist/src/producer/main.js [options])

Demo stand-in for the original producer: creates and seeds initial_data and historical_transactions
if missing, declares the queue as the original does (durable, no arguments) and publishes
{"id": <provider id>, "value": <amount>} as persistent messages. Connection settings come from
DATABASE_URL, RABBITMQ_URL and INCOMING_QUEUE, as for the app.

Options (environment variable in brackets):
  --rate <msg/s>           publish at this steady rate instead of one message every 10-40 s [PRODUCER_RATE]
  --count <n>              stop after n messages (default: run until SIGINT/SIGTERM); 0 only
                           creates and seeds the tables [PRODUCER_COUNT]
  --min-delay <s>          shortest pause between messages without --rate (default 10) [PRODUCER_MIN_DELAY_SECONDS]
  --max-delay <s>          longest pause between messages without --rate (default 40) [PRODUCER_MAX_DELAY_SECONDS]
  --message-ids            set a unique message_id on every message and print each one on stderr (the
                           workflow ID is ingest-<message_id>; default: none, like the original) [PRODUCER_MESSAGE_IDS=true]
  --bad-ratio <0..1>       make this fraction of messages malformed, evenly spread (default 0) [PRODUCER_BAD_RATIO]
  --reseed                 insert the seed rows even if the tables exist, as the original does on
                           every start (default: seed only tables this run created) [PRODUCER_RESEED=true]
  --queue <name>           publish to this queue instead of INCOMING_QUEUE
  --progress-seconds <s>   seconds between progress lines on stderr with --rate (default 5)
  --heartbeat-file <path>  touch this file every 5 s while connected to RabbitMQ [PRODUCER_HEARTBEAT_FILE]
  -h, --help               show this help
`;

function number(name: string, raw: string | undefined, check: (n: number) => boolean, rule: string) {
  if (raw === undefined || raw === '') return undefined;
  const value = Number(raw);
  if (!Number.isFinite(value) || !check(value)) throw new UsageError(`${name} must be ${rule}, got "${raw}"`);
  return value;
}

function flag(name: string, raw: string | undefined): boolean | undefined {
  if (raw === undefined || raw === '') return undefined;
  if (raw === 'true' || raw === '1') return true;
  if (raw === 'false' || raw === '0') return false;
  throw new UsageError(`${name} must be true or false, got "${raw}"`);
}

export const PRODUCER_FLAGS = {
  rate: { type: 'string' },
  count: { type: 'string' },
  'min-delay': { type: 'string' },
  'max-delay': { type: 'string' },
  'message-ids': { type: 'boolean' },
  'bad-ratio': { type: 'string' },
  reseed: { type: 'boolean' },
  queue: { type: 'string' },
  'progress-seconds': { type: 'string' },
  'heartbeat-file': { type: 'string' },
} as const;

/** Flags win over environment variables, which win over the defaults. Throws UsageError. */
export function parseProducerOptions(argv: string[], env: NodeJS.ProcessEnv = process.env): ProducerOptions {
  return producerOptions(parseFlags(PRODUCER_FLAGS, argv), env);
}

/** The parsed flags over the environment over the defaults. Throws UsageError. */
export function producerOptions(
  values: FlagValues<typeof PRODUCER_FLAGS>,
  env: NodeJS.ProcessEnv = process.env,
): ProducerOptions {
  const positive = (n: number) => n > 0;
  const nonNegative = (n: number) => n >= 0;
  const options: ProducerOptions = {
    rate: number('--rate', values.rate ?? env.PRODUCER_RATE, positive, 'a positive number'),
    count: number(
      '--count',
      values.count ?? env.PRODUCER_COUNT,
      (n) => Number.isInteger(n) && n >= 0,
      'a whole number',
    ),
    minDelaySeconds:
      number('--min-delay', values['min-delay'] ?? env.PRODUCER_MIN_DELAY_SECONDS, nonNegative, '>= 0') ?? 10,
    maxDelaySeconds:
      number('--max-delay', values['max-delay'] ?? env.PRODUCER_MAX_DELAY_SECONDS, nonNegative, '>= 0') ?? 40,
    messageIds: values['message-ids'] ?? flag('PRODUCER_MESSAGE_IDS', env.PRODUCER_MESSAGE_IDS) ?? false,
    badRatio:
      number(
        '--bad-ratio',
        values['bad-ratio'] ?? env.PRODUCER_BAD_RATIO,
        (n) => n >= 0 && n <= 1,
        'between 0 and 1',
      ) ?? 0,
    reseed: values.reseed ?? flag('PRODUCER_RESEED', env.PRODUCER_RESEED) ?? false,
    queue: values.queue || undefined,
    progressSeconds:
      number('--progress-seconds', values['progress-seconds'], positive, 'a positive number') ?? 5,
    heartbeatFile: values['heartbeat-file'] ?? (env.PRODUCER_HEARTBEAT_FILE || undefined),
    help: values.help ?? false,
  };
  if (options.minDelaySeconds > options.maxDelaySeconds) {
    throw new UsageError(
      `--min-delay (${options.minDelaySeconds}) must not exceed --max-delay (${options.maxDelaySeconds})`,
    );
  }
  return options;
}
