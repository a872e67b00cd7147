import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig, type Config } from './config.js';

/**
 * The one command-line runner: the service (`npm start`), the schedule commands, `balances`,
 * `dlq:replay` and `produce` all parse flags, answer `--help`, read `.env` and exit through it.
 * Exit status: 0 done; 1 failed (one line saying why, never a stack trace); 2 bad usage or
 * configuration (one line naming the flag or the variable).
 */

/** A flag value the command cannot use: one line pointing at --help, exit 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

export type Flags = Record<string, { type: 'string' | 'boolean'; short?: string }>;

export type FlagValues<F extends Flags> = {
  [K in keyof F]?: F[K]['type'] extends 'boolean' ? boolean : string;
} & { help?: boolean };

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Aborted at the first SIGINT or SIGTERM, for a command with `stopOnSignal`. */
  signal?: AbortSignal;
}

export interface Command<F extends Flags, A = FlagValues<F>> {
  /** The npm script (`schedule:pause`): names the command in its error lines and the --help hint. */
  name: string;
  /** Printed before each error line; default `<name>: `. */
  prefix?: string;
  /** What `--help` prints. */
  usage: string;
  /** Flags besides -h/--help, as `util.parseArgs` takes them. */
  flags: F;
  /** The flags (and environment, .env read) as `run` takes them; throws UsageError or ConfigError. */
  parse?(values: FlagValues<F>, env: NodeJS.ProcessEnv): A;
  /** SIGINT/SIGTERM abort `io.signal` instead of ending the process. */
  stopOnSignal?: boolean;
  /** Resolves to the exit status; a rejection is one line and exit 1 (2 for a ConfigError). */
  run(input: { args: A; config: Config; io: CliIo; dotEnv: string | undefined }): Promise<number>;
}

/**
 * Loads `.env` from the working directory into `process.env` when the file exists, with Node's own
 * parser (`process.loadEnvFile`). A variable already in the environment wins over the file, even
 * when set to an empty string. Returns the absolute path read, or undefined when there is no file.
 */
export function loadDotEnv(path = '.env'): string | undefined {
  const absolute = resolve(path);
  if (!existsSync(absolute)) return undefined;
  process.loadEnvFile(absolute);
  return absolute;
}

/** `util.parseArgs`, strict, no positionals, with -h/--help; a bad flag throws UsageError. */
export function parseFlags<F extends Flags>(flags: F, argv: string[]): FlagValues<F> {
  try {
    return parseArgs({
      args: argv,
      options: { ...flags, help: { type: 'boolean', short: 'h' } },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

/** Runs `command` with these arguments and environment; resolves to its exit status. */
export async function runCommand<F extends Flags, A>(
  command: Command<F, A>,
  argv: string[],
  env: NodeJS.ProcessEnv,
  io: CliIo,
  readDotEnv: () => string | undefined = () => undefined,
): Promise<number> {
  const say = (message: string) => io.stderr(`${command.prefix ?? `${command.name}: `}${message}\n`);
  const refuse = (message: string) => {
    say(message);
    return 2;
  };
  let input;
  try {
    const values = parseFlags(command.flags, argv);
    if (values.help) {
      io.stdout(command.usage);
      return 0;
    }
    const dotEnv = readEnvFile(readDotEnv);
    const args = command.parse ? command.parse(values, env) : (values as A);
    input = { args, config: loadConfig(env), io, dotEnv };
  } catch (error) {
    if (error instanceof UsageError) return refuse(`${error.message} (npm run ${command.name} -- --help)`);
    if (error instanceof ConfigError) return refuse(error.message);
    throw error;
  }
  try {
    return await command.run(input);
  } catch (error) {
    if (error instanceof ConfigError) return refuse(error.message);
    say((error as Error).message);
    return 1;
  }
}

function readEnvFile(readDotEnv: () => string | undefined): string | undefined {
  try {
    return readDotEnv();
  } catch (error) {
    throw new ConfigError(`cannot read .env: ${(error as Error).message}`);
  }
}

/** Runs `command` as this process: its arguments, its environment and `.env`, its exit status. */
export function runAsProcess<F extends Flags, A>(command: Command<F, A>): void {
  const io: CliIo = {
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
  };
  if (command.stopOnSignal) {
    const stop = new AbortController();
    // `process.on`, not `once`: Ctrl-C under `npm run` delivers SIGINT twice (from the terminal and
    // forwarded by npm), and a second signal must not kill a shutdown in progress.
    for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => stop.abort(signal));
    io.signal = stop.signal;
  }
  runCommand(command, process.argv.slice(2), process.env, io, loadDotEnv).then(
    (status) => process.exit(status),
    (error: unknown) => {
      io.stderr(`${command.prefix ?? `${command.name}: `}${(error as Error).message}\n`);
      process.exit(1);
    },
  );
}
