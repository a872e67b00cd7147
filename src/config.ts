import { z } from 'zod';
import { MAX_SYNC_LEAD_SECONDS } from './activities/sync-timing.js';

/** Every setting of the service, read from the environment once at start-up. */
export type Config = z.infer<typeof configSchema> & {
  /** Task queue of SyncBalances and ReconcileBalances: default `<TEMPORAL_TASK_QUEUE>-sync`. */
  TEMPORAL_SYNC_TASK_QUEUE: string;
};

const url = (protocols: string[]) =>
  z
    .string()
    .min(1)
    .refine(
      (value) => {
        try {
          return protocols.includes(new URL(value).protocol);
        } catch {
          return false;
        }
      },
      { message: `must be a URL starting with ${protocols.map((p) => `${p}//`).join(' or ')}` },
    );

/**
 * A whole number written in decimal digits (surrounding spaces allowed). Plain z.coerce.number()
 * would read "   " as 0 (HTTP_PORT silently becoming a random port) and accept "0x1F90" or "1e3".
 */
const wholeNumber = (fallback: number, min: number, max = Number.MAX_SAFE_INTEGER) =>
  z
    .string()
    .trim()
    .regex(/^\d+$/, { message: 'must be a whole number' })
    .transform(Number)
    .pipe(z.number().int().min(min).max(max))
    .default(fallback);

const positiveInt = (fallback: number) => wholeNumber(fallback, 1);

const configSchema = z.object({
  TEMPORAL_ADDRESS: z.string().min(1).default('localhost:7233'),
  TEMPORAL_NAMESPACE: z.string().min(1).default('default'),
  TEMPORAL_TASK_QUEUE: z.string().min(1).default('balance-sync'),
  TEMPORAL_SYNC_TASK_QUEUE: z.string().min(1).optional(),
  DATABASE_URL: url(['postgres:', 'postgresql:']).default('postgres://user:password@localhost:5432/fxc'),
  KEYDB_URL: url(['redis:', 'rediss:']).default('redis://localhost:6379/0'),
  RABBITMQ_URL: url(['amqp:', 'amqps:']).default('amqp://user:password@localhost:5672'),
  INCOMING_QUEUE: z.string().min(1).default('incoming_transactions'),
  DEAD_LETTER_QUEUE: z.string().min(1).default('incoming_transactions.dead'),
  LOG_LEVEL: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  HTTP_PORT: wholeNumber(9464, 0, 65535),
  BRIDGE_PREFETCH: positiveInt(64),
  BRIDGE_MAX_IN_FLIGHT: wholeNumber(100, 0),
  INGEST_SUMMARY_SECONDS: wholeNumber(60, 0),
  MAX_MESSAGE_BYTES: positiveInt(65536),
  WORKER_MAX_WORKFLOW_TASKS: positiveInt(100),
  WORKER_MAX_LOCAL_ACTIVITIES: positiveInt(200),
  SYNC_SCHEDULE_ID: z.string().min(1).default('sync-balances'),
  SYNC_LEAD_SECONDS: wholeNumber(5, 0, MAX_SYNC_LEAD_SECONDS),
  RECONCILE_SCHEDULE_ID: z.string().min(1).default('reconcile-balances'),
  RECONCILE_CRON: z.string().min(1).default('17 * * * *'),
  STARTUP_WAIT_SECONDS: wholeNumber(600, 0),
  BRIDGE_EAGER_START: z
    .enum(['true', 'false'], { message: 'must be true or false' })
    .default('true')
    .transform((value) => value === 'true'),
  TEMPORAL_METRICS_PORT: wholeNumber(9465, 0, 65535),
  WORKFLOW_BUNDLE_PATH: z.string().default(''),
});

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Parses the environment; a bad value throws one ConfigError naming every offending variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const present = Object.fromEntries(
    Object.keys(configSchema.shape).flatMap((key) => {
      const value = env[key];
      return value === undefined || value === '' ? [] : [[key, value]];
    }),
  );
  const parsed = configSchema.safeParse(present);
  if (parsed.success) {
    return {
      ...parsed.data,
      TEMPORAL_SYNC_TASK_QUEUE:
        parsed.data.TEMPORAL_SYNC_TASK_QUEUE ?? `${parsed.data.TEMPORAL_TASK_QUEUE}-sync`,
    };
  }
  const problems = parsed.error.issues.map((issue) => {
    const variable = String(issue.path[0] ?? '?');
    // Never echo the rejected value: it may be a credential.
    return `${variable}: ${issue.message}`;
  });
  throw new ConfigError(`Invalid configuration: ${problems.join('; ')}`);
}

/** A URL with its password replaced, safe for logs and error messages. */
export function redactUrl(value: string): string {
  try {
    const parsed = new URL(value);
    // "postgres:user:secret@db" parses with no host and the credentials in an opaque path.
    if (!parsed.host && parsed.pathname.includes('@')) return `${parsed.protocol}<redacted>`;
    if (parsed.password) parsed.password = '***';
    // libpq-style URLs may carry the password as a query parameter.
    if (parsed.searchParams.has('password')) parsed.searchParams.set('password', '***');
    return parsed.toString();
  } catch {
    return '<unparseable url>';
  }
}
