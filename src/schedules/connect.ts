import { Client, Connection, ScheduleNotFoundError, type ScheduleHandle } from '@temporalio/client';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from '../config.js';
import { loadDotEnv } from '../env-file.js';
import { temporalConnectOptions, tlsHint } from '../temporal-connection.js';

type Option = { type: 'string' | 'boolean'; help: string };

export interface ScheduleCommand<T extends Record<string, Option>> {
  /** `schedule:pause`: the npm script name, used in usage and error lines. */
  name: string;
  /** One or two sentences under the usage line. */
  summary: string;
  /** Flags besides --schedule-id and --help. */
  options?: T;
  /** Checks the flags before connecting; throws ScheduleUsageError. */
  check?(values: Values<T>): void;
  /** Does the operation; returns the line printed on success. */
  run(context: { handle: ScheduleHandle; scheduleId: string; values: Values<T> }): Promise<string>;
}

type Values<T extends Record<string, Option>> = {
  [K in keyof T]?: T[K]['type'] extends 'boolean' ? boolean : string;
};

/** A flag value the command cannot use: printed with a pointer to --help, exit 2. */
export class ScheduleUsageError extends Error {
  override name = 'ScheduleUsageError';
}

const CONNECT_TIMEOUT = '5 seconds';

function usage<T extends Record<string, Option>>(command: ScheduleCommand<T>): string {
  const options: [string, string][] = [
    ['--schedule-id ID', 'the schedule (default: SYNC_SCHEDULE_ID, sync-balances)'],
    ...Object.entries(command.options ?? {}).map(([flag, option]): [string, string] => [
      `--${flag}${option.type === 'string' ? ' VALUE' : ''}`,
      option.help,
    ]),
    ['-h, --help', 'show this help'],
  ];
  const width = Math.max(...options.map(([flag]) => flag.length)) + 2;
  return (
    `Usage: npm run ${command.name} -- [options]\n\n${command.summary}\n\n` +
    options.map(([flag, help]) => `  ${flag.padEnd(width)}${help}`).join('\n') +
    '\n\nTemporal connection: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE (and TEMPORAL_API_KEY, TEMPORAL_TLS_*), ' +
    'read from the environment and .env as by the app.\n'
  );
}

/**
 * Runs one schedule operation as a command-line tool: `--help` prints usage; a bad flag or setting
 * prints one line and exits 2; an unreachable Temporal or an unknown schedule prints one line and
 * exits 1; success prints one line and exits 0. Never a stack trace.
 */
export async function runScheduleCommand<T extends Record<string, Option>>(
  command: ScheduleCommand<T>,
): Promise<never> {
  const fail = (status: number, message: string, hint = ''): never => {
    process.stderr.write(`${command.name}: ${message}${hint}\n`);
    process.exit(status);
  };
  const parseOptions = Object.fromEntries(
    Object.entries({ ...command.options, 'schedule-id': { type: 'string' } }).map(([flag, option]) => [
      flag,
      { type: option.type },
    ]),
  );
  let values: Record<string, string | boolean | undefined>;
  let config;
  let connect;
  try {
    ({ values } = parseArgs({
      options: { ...parseOptions, help: { type: 'boolean', short: 'h' } },
      strict: true,
      allowPositionals: false,
    }));
    if (values.help) {
      process.stdout.write(usage(command));
      process.exit(0);
    }
    command.check?.(values as Values<T>);
    loadDotEnv();
    config = loadConfig();
    connect = temporalConnectOptions(config);
  } catch (error) {
    if (error instanceof ConfigError) return fail(2, error.message);
    return fail(2, (error as Error).message, ` (npm run ${command.name} -- --help)`);
  }

  const scheduleId = (values['schedule-id'] as string | undefined) || config.SYNC_SCHEDULE_ID;
  const { connectionOptions, namespace } = connect;
  let connection: Connection;
  try {
    connection = await Connection.connect({
      address: connectionOptions.address,
      tls: connectionOptions.tls,
      apiKey: connectionOptions.apiKey,
      metadata: connectionOptions.metadata,
      connectTimeout: CONNECT_TIMEOUT,
    });
  } catch (error) {
    // grpc-js says only "Failed to connect before the deadline", whatever the TLS settings lacked.
    const hint = tlsHint(connectionOptions);
    const message = `cannot reach Temporal at ${connectionOptions.address}: ${(error as Error).message}`;
    return fail(1, hint && connectionOptions.tls ? `${message}; ${hint}` : message);
  }
  try {
    const handle = new Client({ connection, namespace }).schedule.getHandle(scheduleId);
    const line = await command.run({ handle, scheduleId, values: values as Values<T> });
    process.stdout.write(`${line}\n`);
    await connection.close();
    process.exit(0);
  } catch (error) {
    await connection.close().catch(() => undefined);
    if (error instanceof ScheduleNotFoundError) {
      return fail(1, `schedule "${scheduleId}" not found in namespace ${namespace}`);
    }
    return fail(1, (error as Error).message);
  }
}
