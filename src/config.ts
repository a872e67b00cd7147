import { existsSync } from 'node:fs';
import { isIP } from 'node:net';
import { z } from 'zod';
import { MAX_SYNC_LEAD_SECONDS } from './sync-timing.js';
import { cronProblem } from './cron.js';

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

/** `true` (the default) or `false`. */
const trueOrFalse = z
  .enum(['true', 'false'], { message: 'must be true or false' })
  .default('true')
  .transform((value) => value === 'true');

/** host:port, as Temporal's clients take it; a URL or a bare host would only fail at connect time. */
const hostAndPort = z
  .string()
  .trim()
  .regex(/^(\[[0-9A-Fa-f:.]+\]|[^\s:/[\]]+):\d{1,5}$/, { message: 'must be host:port, e.g. localhost:7233' });

/** An interface to listen on: an IP address (IPv6 without brackets) or a host name, without a port. */
const listenHost = z
  .string()
  .trim()
  .refine(
    (value) =>
      isIP(value) !== 0 ||
      /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/.test(
        value,
      ),
    { message: 'must be an IP address or a host name, without a port (e.g. 127.0.0.1 or ::1)' },
  );

/** RabbitMQ refuses to declare names over 255 bytes or starting with "amq." (ACCESS_REFUSED). */
const queueName = z
  .string()
  .min(1)
  .refine((name) => Buffer.byteLength(name) <= 255, { message: 'must be at most 255 bytes' })
  .refine((name) => !name.startsWith('amq.'), {
    message: 'must not start with "amq." (reserved by RabbitMQ)',
  });

/**
 * amqplib would take a `heartbeat` query parameter over RABBITMQ_HEARTBEAT_SECONDS (and 0 there defers
 * to the broker's 60 s, or turns heartbeats off): one setting decides how fast a hung broker is noticed.
 */
const rabbitmqUrl = url(['amqp:', 'amqps:']).refine(
  (value) => {
    try {
      return !new URL(value).searchParams.has('heartbeat');
    } catch {
      return true; // reported as not a URL
    }
  },
  { message: 'must not carry a heartbeat parameter: set RABBITMQ_HEARTBEAT_SECONDS instead' },
);

const cronExpression = z
  .string()
  .min(1)
  .superRefine((value, context) => {
    const problem = cronProblem(value);
    if (problem) context.addIssue({ code: 'custom', message: problem });
  });

const configSchema = z.object({
  TEMPORAL_ADDRESS: hostAndPort.default('localhost:7233'),
  TEMPORAL_NAMESPACE: z.string().min(1).default('default'),
  TEMPORAL_TASK_QUEUE: z.string().min(1).default('balance-sync'),
  TEMPORAL_SYNC_TASK_QUEUE: z.string().min(1).optional(),
  DATABASE_URL: url(['postgres:', 'postgresql:']).default('postgres://user:password@localhost:5432/fxc'),
  // ioredis reads the path's leading digits as the db index ("/9x" is db 9): only a whole number is a db.
  KEYDB_URL: url(['redis:', 'rediss:'])
    .refine((value) => /^\/?(\d+)?\/?$/.test(URL.canParse(value) ? new URL(value).pathname : ''), {
      message: 'the path must be a database index (a whole number, e.g. /0) or empty',
    })
    .default('redis://localhost:6379/0'),
  RABBITMQ_URL: rabbitmqUrl.default('amqp://user:password@localhost:5672'),
  // A hung broker (socket open, no frames) is noticed after 2–3 intervals; 0 (no heartbeat) would never notice.
  RABBITMQ_HEARTBEAT_SECONDS: wholeNumber(5, 1, 60),
  INCOMING_QUEUE: queueName.default('incoming_transactions'),
  DEAD_LETTER_QUEUE: queueName.default('incoming_transactions.dead'),
  LOG_LEVEL: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  HTTP_PORT: wholeNumber(9464, 0, 65535),
  // Unset: every interface (IPv6 and IPv4 where the host has both).
  HTTP_HOST: listenHost.optional(),
  // AMQP's prefetch count is a 16-bit field.
  BRIDGE_PREFETCH: wholeNumber(64, 1, 65535),
  BRIDGE_MAX_IN_FLIGHT: wholeNumber(100, 0),
  INGEST_SUMMARY_SECONDS: wholeNumber(60, 0),
  MAX_MESSAGE_BYTES: positiveInt(65536),
  // The SDK silently raises 1 to 2 (a sticky worker needs two slots).
  // Above BRIDGE_MAX_IN_FLIGHT + BRIDGE_PREFETCH + 10 pollers, so every start stays eager (eagerStartShortfall).
  WORKER_MAX_WORKFLOW_TASKS: wholeNumber(200, 2),
  WORKER_MAX_LOCAL_ACTIVITIES: positiveInt(200),
  SYNC_SCHEDULE_ID: z.string().min(1).default('sync-balances'),
  SYNC_LEAD_SECONDS: wholeNumber(5, 0, MAX_SYNC_LEAD_SECONDS),
  RECONCILE_SCHEDULE_ID: z.string().min(1).default('reconcile-balances'),
  RECONCILE_CRON: cronExpression.default('17 * * * *'),
  STARTUP_WAIT_SECONDS: wholeNumber(600, 0),
  BRIDGE_EAGER_START: trueOrFalse,
  BRIDGE_HOLD_FOR_SYNC: trueOrFalse,
  TEMPORAL_METRICS_PORT: wholeNumber(9465, 0, 65535),
  // Unset: GET /balances answers 404. Compared as a bearer token; never logged or echoed.
  BALANCES_API_TOKEN: z
    .string()
    .regex(/^[\x21-\x7e]+$/, { message: 'must be printable ASCII without spaces' })
    .min(16, { message: 'must be at least 16 characters' })
    .optional(),
  BALANCE_HISTORY_DAYS: wholeNumber(90, 0, 36_500),
  WORKFLOW_BUNDLE_PATH: z
    .string()
    .refine((path) => path === '' || existsSync(path), {
      message: 'file not found (npm run build makes it)',
    })
    .default(''),
});

// Settings that are each valid but clash with one another, and would otherwise fail only later.
const checkedSchema = configSchema.superRefine((config, context) => {
  const clash = (variable: keyof typeof config, message: string) =>
    context.addIssue({ code: 'custom', path: [variable], message });
  if (config.DEAD_LETTER_QUEUE === config.INCOMING_QUEUE)
    clash('DEAD_LETTER_QUEUE', 'must differ from INCOMING_QUEUE');
  if (config.RECONCILE_SCHEDULE_ID === config.SYNC_SCHEDULE_ID)
    clash('RECONCILE_SCHEDULE_ID', 'must differ from SYNC_SCHEDULE_ID');
  if (config.TEMPORAL_METRICS_PORT !== 0 && config.TEMPORAL_METRICS_PORT === config.HTTP_PORT)
    clash('TEMPORAL_METRICS_PORT', `must differ from HTTP_PORT (both ${config.HTTP_PORT})`);
});

/** Workflow-task slots a worker's pollers hold while they wait (the SDK polls with up to 10). */
export const WORKFLOW_TASK_POLLERS = 10;

/**
 * Why some ingest starts may not be eager, or undefined. A run holds a workflow-task slot of this
 * process from its start to its completion (its local activity included), and the starts the throttle
 * lets through (BRIDGE_MAX_IN_FLIGHT unfinished runs, plus up to BRIDGE_PREFETCH starts on their way)
 * must find a free one; a start that finds none is not refused, it goes through the task queue, which
 * costs the server and the worker more per run (docs/BENCHMARKS.md, section 1). BRIDGE_MAX_IN_FLIGHT
 * counts every instance's runs: one instance alone may hold them all.
 */
export function eagerStartShortfall(
  config: Pick<
    Config,
    'BRIDGE_EAGER_START' | 'BRIDGE_MAX_IN_FLIGHT' | 'BRIDGE_PREFETCH' | 'WORKER_MAX_WORKFLOW_TASKS'
  >,
): string | undefined {
  // Without the throttle nothing bounds the runs (nor the backlog in Temporal): no slot count suffices.
  if (!config.BRIDGE_EAGER_START || config.BRIDGE_MAX_IN_FLIGHT === 0) return undefined;
  const needed = config.BRIDGE_MAX_IN_FLIGHT + config.BRIDGE_PREFETCH + WORKFLOW_TASK_POLLERS;
  if (config.WORKER_MAX_WORKFLOW_TASKS >= needed) return undefined;
  return (
    `WORKER_MAX_WORKFLOW_TASKS (${config.WORKER_MAX_WORKFLOW_TASKS}) is below BRIDGE_MAX_IN_FLIGHT + ` +
    `BRIDGE_PREFETCH + ${WORKFLOW_TASK_POLLERS} pollers (${needed}): under a backlog some starts find no free slot and go through the task queue`
  );
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** A configured port that another process holds: reported like a bad value, naming the variable. */
export function portInUseError(variable: string, port: number): ConfigError {
  return new ConfigError(
    `Invalid configuration: ${variable}: port ${port} is already in use by another process`,
  );
}

/** Parses the environment; a bad value throws one ConfigError naming every offending variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const present = Object.fromEntries(
    Object.keys(configSchema.shape).flatMap((key) => {
      const value = env[key];
      return value === undefined || value === '' ? [] : [[key, value]];
    }),
  );
  const parsed = checkedSchema.safeParse(present);
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
