import { describe, expect, it } from 'vitest';
import { runCommand, UsageError, type Command } from '../../src/cli.js';

const flags = { count: { type: 'string' }, 'dry-run': { type: 'boolean' } } as const;

/** Runs a command that prints its --count and returns `status`, capturing its output. */
async function run(
  argv: string[],
  env: NodeJS.ProcessEnv = {},
  overrides: Partial<Command<typeof flags, { count: number }>> = {},
  readDotEnv?: () => string | undefined,
) {
  const out: string[] = [];
  const err: string[] = [];
  const command: Command<typeof flags, { count: number }> = {
    name: 'demo',
    usage: 'Usage: npm run demo -- [--count N]\n',
    flags,
    parse(values) {
      if (values.count !== undefined && !/^\d+$/.test(values.count))
        throw new UsageError(`--count must be a whole number, got "${values.count}"`);
      return { count: Number(values.count ?? 0) };
    },
    run({ args, io }) {
      io.stdout(`count ${args.count}\n`);
      return Promise.resolve(0);
    },
    ...overrides,
  };
  const io = { stdout: (text: string) => out.push(text), stderr: (text: string) => err.push(text) };
  const status = await runCommand(command, argv, env, io, readDotEnv);
  return { status, stdout: out.join(''), stderr: err.join('') };
}

describe('the command-line runner', () => {
  it('runs the command with its parsed flags, exit 0', async () => {
    expect(await run(['--count', '3'])).toEqual({ status: 0, stdout: 'count 3\n', stderr: '' });
  });

  it('prints the usage for -h and --help, exit 0, without running', async () => {
    for (const flag of ['-h', '--help'])
      expect(await run([flag])).toEqual({
        status: 0,
        stdout: 'Usage: npm run demo -- [--count N]\n',
        stderr: '',
      });
  });

  it('refuses an unknown flag, a positional or a bad value in one line pointing at --help, exit 2', async () => {
    expect(await run(['--bogus'])).toEqual({
      status: 2,
      stdout: '',
      stderr: expect.stringMatching(
        /^demo: Unknown option '--bogus'.*\(npm run demo -- --help\)\n$/,
      ) as string,
    });
    expect((await run(['extra'])).status).toBe(2);
    expect(await run(['--count', 'many'])).toEqual({
      status: 2,
      stdout: '',
      stderr: 'demo: --count must be a whole number, got "many" (npm run demo -- --help)\n',
    });
  });

  it('refuses a bad variable in one line naming it, without the --help hint, exit 2', async () => {
    const result = await run([], { HTTP_PORT: 'eighty' });
    expect(result).toEqual({
      status: 2,
      stdout: '',
      stderr: expect.stringMatching(/^demo: Invalid configuration: HTTP_PORT: [^\n]*\n$/) as string,
    });
    expect(result.stderr).not.toContain('--help');
  });

  it('reads .env after --help and before the configuration; an unreadable one is exit 2', async () => {
    const env: NodeJS.ProcessEnv = {};
    const readDotEnv = () => {
      env.HTTP_PORT = 'eighty';
      return '/x/.env';
    };
    expect((await run(['--help'], env, {}, readDotEnv)).status).toBe(0);
    expect(env.HTTP_PORT).toBeUndefined();
    expect((await run([], env, {}, readDotEnv)).stderr).toMatch(/^demo: Invalid configuration: HTTP_PORT/);
    const unreadable = () => {
      throw new Error('EACCES: permission denied');
    };
    expect(await run([], {}, {}, unreadable)).toEqual({
      status: 2,
      stdout: '',
      stderr: 'demo: cannot read .env: EACCES: permission denied\n',
    });
  });

  it('turns a failure of the run into one line, exit 1, and its own status through', async () => {
    const failing = { run: () => Promise.reject(new Error('connect ECONNREFUSED')) };
    expect(await run([], {}, failing)).toEqual({
      status: 1,
      stdout: '',
      stderr: 'demo: connect ECONNREFUSED\n',
    });
    expect((await run([], {}, { run: () => Promise.resolve(1) })).status).toBe(1);
  });

  it('prints bare lines with an empty prefix, as the service does', async () => {
    expect((await run([], { HTTP_PORT: 'eighty' }, { prefix: '' })).stderr).toMatch(
      /^Invalid configuration: HTTP_PORT/,
    );
  });
});
