import { Client, Connection, ScheduleNotFoundError, type ScheduleHandle } from '@temporalio/client';
import { runAsProcess, type Command, type Flags, type FlagValues } from '../cli.js';
import { isRefusal, refusedCredentials, temporalConnectOptions, tlsHint } from '../temporal-connection.js';

type Option = { type: 'string' | 'boolean'; help: string };
type Options = Record<string, Option>;
type Values<T extends Options> = FlagValues<T>;

export interface ScheduleCommand<T extends Options> {
  /** `schedule:pause`: the npm script name, used in usage and error lines. */
  name: string;
  /** One or two sentences under the usage line. */
  summary: string;
  /** Flags besides --schedule-id and --help. */
  options?: T;
  /** Checks the flags before connecting; throws UsageError. */
  check?(values: Values<T>): void;
  /** Does the operation; returns the line printed on success. */
  run(context: { handle: ScheduleHandle; scheduleId: string; values: Values<T> }): Promise<string>;
}

const CONNECT_TIMEOUT = '5 seconds';

function usage<T extends Options>(command: ScheduleCommand<T>): string {
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
 * One schedule operation as a command (src/cli.ts): an unreachable Temporal or an unknown schedule
 * is one line and exit 1; success prints one line and exits 0.
 */
function scheduleCommand<T extends Options>(command: ScheduleCommand<T>) {
  const flags = Object.fromEntries(
    Object.entries({ ...command.options, 'schedule-id': { type: 'string' } }).map(([flag, option]) => [
      flag,
      { type: option.type },
    ]),
  ) as Flags;
  return {
    name: command.name,
    usage: usage(command),
    flags,
    parse(values) {
      command.check?.(values as Values<T>);
      return values;
    },
    async run({ args: values, config, io }) {
      const scheduleId = values['schedule-id'] || config.SYNC_SCHEDULE_ID;
      const { connectionOptions, namespace } = temporalConnectOptions(config);
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
        // The server answered GetSystemInfo by refusing the API key: its words are in the cause.
        const { cause } = error as { cause?: { details?: string } };
        if (isRefusal(cause))
          throw new Error(
            `cannot reach Temporal at ${connectionOptions.address}: ` +
              refusedCredentials(cause!.details ?? (error as Error).message, connectionOptions),
          );
        // grpc-js says only "Failed to connect before the deadline", whatever the TLS settings lacked.
        const hint = tlsHint(connectionOptions);
        const message = `cannot reach Temporal at ${connectionOptions.address}: ${(error as Error).message}`;
        throw new Error(hint && connectionOptions.tls ? `${message}; ${hint}` : message);
      }
      try {
        const handle = new Client({ connection, namespace }).schedule.getHandle(scheduleId);
        io.stdout(`${await command.run({ handle, scheduleId, values: values as Values<T> })}\n`);
        return 0;
      } catch (error) {
        if (error instanceof ScheduleNotFoundError)
          throw new Error(`schedule "${scheduleId}" not found in namespace ${namespace}`);
        throw error;
      } finally {
        await connection.close().catch(() => undefined);
      }
    },
  } satisfies Command<typeof flags>;
}

/** Runs one schedule operation as this process (see src/cli.ts for --help, .env and exit statuses). */
export function runScheduleCommand<T extends Options>(command: ScheduleCommand<T>): void {
  runAsProcess(scheduleCommand(command));
}
