import type { Client } from '@temporalio/client';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { runCommand } from '../support/app-process.js';
import { freePort } from '../support/dev-server.js';
import { temporalClient, waitFor } from '../support/harness.js';

/** `npm run --silent <script> -- args`: what the README shows, without npm's own banner. */
const npmRun = (script: string, args: string[], env: Record<string, string> = {}) =>
  runCommand('npm', ['run', '--silent', script, '--', ...args], env);

const SCHEDULE_SCRIPTS = [
  'schedule:pause',
  'schedule:unpause',
  'schedule:trigger',
  'schedule:describe',
  'schedule:backfill',
];

describe('the operator scripts', () => {
  let client: Client;
  let temporal: Record<string, string>;
  const id = randomUUID().slice(0, 8);
  const created: string[] = [];

  /** A schedule that never fires by itself (1 January, 10:xx); each run times out after 1 s. */
  async function createSchedule(scheduleId: string) {
    await client.schedule.create({
      scheduleId,
      spec: { calendars: [{ second: 0, minute: '*', hour: 10, dayOfMonth: 1, month: 'JANUARY' }] },
      action: {
        type: 'startWorkflow',
        workflowType: 'NoWorkerPollsThis',
        workflowId: scheduleId,
        taskQueue: `no-worker-${id}`,
        args: [],
        workflowRunTimeout: '1 second',
      },
      policies: { overlap: 'SKIP' },
    });
    created.push(scheduleId);
  }

  beforeAll(async () => {
    client = await temporalClient();
    temporal = {
      TEMPORAL_ADDRESS: inject('temporalAddress'),
      TEMPORAL_NAMESPACE: inject('temporalNamespace'),
    };
  });

  afterAll(async () => {
    for (const scheduleId of created) await client.schedule.getHandle(scheduleId).delete();
    await client.connection.close();
  });

  it.each(SCHEDULE_SCRIPTS)('npm run %s -- --help prints its usage and exits 0', async (script) => {
    const result = await npmRun(script, ['--help']);
    expect(result.status).toBe(0);
    expect(result.stdout).toMatch(new RegExp(`^Usage: npm run ${script} -- \\[options\\]\\n`));
    expect(result.stdout).toContain('--schedule-id ID');
    expect(result.errors).toEqual([]);
  });

  it.each([
    [
      'schedule:pause',
      ['--bogus'],
      /^schedule:pause: Unknown option '--bogus'.*\(npm run schedule:pause -- --help\)$/,
    ],
    ['schedule:describe', ['extra'], /^schedule:describe: Unexpected argument 'extra'.*--help\)$/],
    [
      'schedule:backfill',
      ['--start', 'yesterday', '--end', 'today'],
      /^schedule:backfill: --start and --end must be ISO times/,
    ],
    ['schedule:backfill', [], /^schedule:backfill: --start and --end must be ISO times/],
  ])('%s %j: one line, exit 2, before connecting', async (script, args, line) => {
    // An unreachable Temporal proves the arguments are checked first.
    const result = await npmRun(script, args, { TEMPORAL_ADDRESS: `127.0.0.1:${await freePort()}` });
    expect(result.errors).toEqual([expect.stringMatching(line)]);
    expect(result.status).toBe(2);
  });

  it('a bad setting: one line naming the variable, exit 2', async () => {
    const result = await npmRun('schedule:describe', [], { TEMPORAL_ADDRESS: 'http://temporal' });
    expect(result.errors).toEqual([
      expect.stringMatching(/^schedule:describe: Invalid configuration: TEMPORAL_ADDRESS: /),
    ]);
    expect(result.status).toBe(2);
  });

  it.each(SCHEDULE_SCRIPTS.filter((script) => script !== 'schedule:backfill'))(
    '%s of an unknown schedule: one line, exit 1',
    async (script) => {
      const result = await npmRun(script, ['--schedule-id', `missing-${id}`], temporal);
      expect(result.errors).toEqual([
        `${script}: schedule "missing-${id}" not found in namespace ${inject('temporalNamespace')}`,
      ]);
      expect(result.status).toBe(1);
    },
  );

  it('an unreachable Temporal: one line naming the address, exit 1', async () => {
    const address = `127.0.0.1:${await freePort()}`;
    const result = await npmRun('schedule:describe', [], { TEMPORAL_ADDRESS: address });
    expect(result.errors).toEqual([
      expect.stringMatching(new RegExp(`^schedule:describe: cannot reach Temporal at ${address}: `)),
    ]);
    expect(result.status).toBe(1);
  });

  it('pause, describe, unpause: one line each, exit 0', async () => {
    const scheduleId = `ops-pause-${id}`;
    await createSchedule(scheduleId);
    const args = ['--schedule-id', scheduleId];
    expect(await npmRun('schedule:pause', [...args, '--reason', 'maintenance'], temporal)).toEqual({
      status: 0,
      stdout: `paused ${scheduleId}\n`,
      errors: [],
    });
    const described = await npmRun('schedule:describe', args, temporal);
    expect(JSON.parse(described.stdout)).toMatchObject({ scheduleId, paused: true, note: 'maintenance' });
    expect((await npmRun('schedule:unpause', args, temporal)).stdout).toBe(`unpaused ${scheduleId}\n`);
    expect((await client.schedule.getHandle(scheduleId).describe()).state.paused).toBe(false);
  });

  describe('backfill: the npm script and the README line do the same thing', () => {
    const start = '2026-01-01T10:00:30Z';
    const end = '2026-01-01T10:03:30Z'; // ticks 10:01, 10:02, 10:03

    /** The runs the schedule started, oldest first, once all three have ended. */
    async function runsOf(scheduleId: string) {
      return await waitFor(
        `three backfilled runs of ${scheduleId} to end`,
        async () => {
          const runs = [];
          for await (const execution of client.workflow.list({
            query: `TemporalScheduledById = "${scheduleId}"`,
          })) {
            runs.push(execution);
          }
          const ended = runs.filter((execution) => execution.closeTime !== undefined);
          return ended.length === 3 && runs.length === 3 ? ended : undefined;
        },
        60_000,
      ).then((runs) => runs.sort((a, b) => a.startTime.getTime() - b.startTime.getTime()));
    }

    /** Every tick ran, and each run started only after the previous one had ended. */
    async function expectEveryTickOneAtATime(scheduleId: string) {
      const runs = await runsOf(scheduleId);
      for (let i = 1; i < runs.length; i++) {
        expect(runs[i]!.startTime.getTime()).toBeGreaterThanOrEqual(runs[i - 1]!.closeTime!.getTime());
      }
    }

    it('npm run schedule:backfill runs every tick in the range, one at a time', async () => {
      const scheduleId = `ops-backfill-npm-${id}`;
      await createSchedule(scheduleId);
      const result = await npmRun(
        'schedule:backfill',
        ['--schedule-id', scheduleId, '--start', start, '--end', end],
        temporal,
      );
      expect(result.errors).toEqual([]);
      expect(result.stdout).toMatch(new RegExp(`^backfilled ${scheduleId} from `));
      expect(result.status).toBe(0);
      await expectEveryTickOneAtATime(scheduleId);
    });

    it("the README's `temporal schedule backfill` line does the same", async () => {
      const readmeLine = /`(temporal schedule backfill [^`]+)`/.exec(
        readFileSync(new URL('../../README.md', import.meta.url), 'utf8'),
      )?.[1];
      expect(readmeLine).toBeDefined();
      const scheduleId = `ops-backfill-cli-${id}`;
      await createSchedule(scheduleId);
      // The README's flags, with this test's schedule and range.
      const args = readmeLine!
        .split(/\s+/)
        .slice(1)
        .map((word, i, words) => {
          if (words[i - 1] === '--schedule-id') return scheduleId;
          if (words[i - 1] === '--start-time') return start;
          if (words[i - 1] === '--end-time') return end;
          return word;
        });
      const result = await runCommand(inject('temporalCliPath'), args, temporal);
      expect(result.errors).toEqual([]);
      expect(result.status).toBe(0);
      await expectEveryTickOneAtATime(scheduleId);
    });
  });

  describe('produce and dlq:replay', () => {
    it.each([
      ['produce', ['--bogus'], /^produce: Unknown option '--bogus'.*\(npm run produce -- --help\)$/],
      [
        'produce',
        ['--rate', 'fast'],
        /^produce: --rate must be a positive number, got "fast" \(npm run produce -- --help\)$/,
      ],
      [
        'dlq:replay',
        ['--count', 'many'],
        /^dlq:replay: --count must be a whole number, got "many" \(npm run dlq:replay -- --help\)$/,
      ],
    ])('%s %j: one line, exit 2', async (script, args, line) => {
      const result = await npmRun(script, args);
      expect(result.errors).toEqual([expect.stringMatching(line)]);
      expect(result.status).toBe(2);
    });

    it('dlq:replay with RabbitMQ unreachable: one line, exit 1', async () => {
      const result = await npmRun('dlq:replay', ['--dry-run'], {
        RABBITMQ_URL: `amqp://user:password@127.0.0.1:${await freePort()}`,
      });
      expect(result.errors).toEqual([expect.stringMatching(/^dlq:replay: connect ECONNREFUSED/)]);
      expect(result.status).toBe(1);
    });

    it('produce with Postgres unreachable: a last line saying why, exit 1, no stack trace', async () => {
      const result = await npmRun('produce', ['--count', '1'], {
        DATABASE_URL: `postgres://user:password@127.0.0.1:${await freePort()}/fxc`,
      });
      expect(result.errors.at(-1)).toMatch(/^produce: failed: connect ECONNREFUSED/);
      expect(result.errors.join('\n')).not.toMatch(/^\s+at /m);
      expect(result.status).toBe(1);
    });
  });
});
