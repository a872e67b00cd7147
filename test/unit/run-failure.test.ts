import type { Client, ProtoFailure } from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import { lastFailedRun } from '../../src/schedules/run-failure.js';
import { ATTEMPT_STOPPED_ERROR } from '../../src/sync-timing.js';

/**
 * The cause a stale-sync warning gives for a failed run, read from the run's history (fakes shaped
 * like the server's events): the error that kept the attempts failing, not the deadline that ended
 * the last one.
 */
const RUN = 'sync-balances-2026-12-03T10:15:55Z';
const SINCE = new Date('2026-12-03T10:13:00Z');

const oom: ProtoFailure = {
  message: "OOM command not allowed when used memory > 'maxmemory'.",
  applicationFailureInfo: { type: 'ReplyError' },
};
const commandTimedOut: ProtoFailure = {
  message: 'Command timed out',
  applicationFailureInfo: { type: 'Error' },
};
const timeout = (kind: string, cause?: ProtoFailure): ProtoFailure => ({
  message: `activity ${kind} timeout`,
  timeoutFailureInfo: {},
  cause,
});
const activityFailure = (message: string, cause: ProtoFailure): ProtoFailure => ({
  message,
  activityFailureInfo: { activityType: { name: 'publishBalances' } },
  cause,
});
const stopped: ProtoFailure = {
  message: 'publishBalances attempt 7 reached its timeout; not writing KeyDB',
  applicationFailureInfo: { type: ATTEMPT_STOPPED_ERROR },
};

/** A SyncBalances run whose workflow task ran and whose one activity ended with `activityEnd`. */
const runHistory = (activityEnd: object[], workflowEnd: object) => [
  { workflowExecutionStartedEventAttributes: {} },
  { workflowTaskScheduledEventAttributes: {} },
  { workflowTaskStartedEventAttributes: {} },
  { workflowTaskCompletedEventAttributes: {} },
  { activityTaskScheduledEventAttributes: { activityType: { name: 'publishBalances' } } },
  ...activityEnd,
  { workflowTaskScheduledEventAttributes: {} },
  { workflowTaskStartedEventAttributes: {} },
  { workflowTaskCompletedEventAttributes: {} },
  workflowEnd,
];

/** A Temporal client that lists one closed run with this status and history. */
function clientWith(status: string, events: object[]) {
  const queries: string[] = [];
  const client = {
    workflow: {
      async *list({ query }: { query: string }) {
        queries.push(query);
        yield await Promise.resolve({ workflowId: RUN, runId: 'run-1', status: { name: status } });
      },
      getHandle: () => ({ fetchHistory: () => Promise.resolve({ events }) }),
    },
  } as unknown as Client;
  return { client, queries };
}

const cause = async (status: string, events: object[]) =>
  await lastFailedRun(clientWith(status, events).client, 'sync-balances', SINCE, 'balance-sync-schedules');

describe('a failed sync run, in the stale-sync warning', () => {
  it('names the KeyDB error of the attempt before the last when the last attempt hit its deadline, then how the run ended', async () => {
    const lastAttempt = timeout('StartToClose');
    const events = runHistory(
      [
        { activityTaskStartedEventAttributes: { attempt: 9, lastFailure: oom } },
        { activityTaskTimedOutEventAttributes: { failure: timeout('ScheduleToClose', lastAttempt) } },
      ],
      {
        workflowExecutionFailedEventAttributes: {
          failure: activityFailure('Activity task timed out', timeout('ScheduleToClose', lastAttempt)),
        },
      },
    );
    expect(await cause('FAILED', events)).toBe(
      `runs are failing: the last, ${RUN}, failed: ReplyError: OOM command not allowed when used memory > 'maxmemory'. ` +
        '(the run ended on: Activity task timed out: activity ScheduleToClose timeout: activity StartToClose timeout)',
    );
  });

  it('passes over an attempt that stopped itself at its deadline to the error before it', async () => {
    const events = runHistory(
      [
        { activityTaskStartedEventAttributes: { attempt: 7, lastFailure: commandTimedOut } },
        { activityTaskFailedEventAttributes: { failure: stopped } },
      ],
      {
        workflowExecutionFailedEventAttributes: { failure: activityFailure('Activity task failed', stopped) },
      },
    );
    expect(await cause('FAILED', events)).toBe(
      `runs are failing: the last, ${RUN}, failed: Error: Command timed out ` +
        `(the run ended on: Activity task failed: ${stopped.message})`,
    );
  });

  it("names the last attempt's own error when it is not a deadline, once", async () => {
    const execAbort: ProtoFailure = {
      message: 'EXECABORT Transaction discarded because of previous errors.',
      applicationFailureInfo: { type: 'ReplyError' },
    };
    const events = runHistory(
      [
        { activityTaskStartedEventAttributes: { attempt: 3, lastFailure: oom } },
        { activityTaskFailedEventAttributes: { failure: execAbort } },
      ],
      {
        workflowExecutionFailedEventAttributes: {
          failure: activityFailure('Activity task failed', execAbort),
        },
      },
    );
    expect(await cause('FAILED', events)).toBe(
      `runs are failing: the last, ${RUN}, failed: ReplyError: EXECABORT Transaction discarded because of previous errors.`,
    );
  });

  it('says no worker took a run that timed out before its first workflow task started, naming the task queue', async () => {
    const events = [
      { workflowExecutionStartedEventAttributes: {} },
      { workflowTaskScheduledEventAttributes: {} },
      { workflowExecutionTimedOutEventAttributes: {} },
    ];
    expect(await cause('TIMED_OUT', events)).toBe(
      `runs are failing: the last, ${RUN}, timed_out: no worker took its workflow task: is a worker polling task queue balance-sync-schedules?`,
    );
  });

  it('lists only the schedule’s runs that failed or timed out since the last published minute', async () => {
    const { client, queries } = clientWith('FAILED', []);
    await lastFailedRun(client, 'sync-balances', SINCE, 'q');
    expect(queries).toEqual([
      "TemporalScheduledById = 'sync-balances' AND ExecutionStatus IN ('Failed', 'TimedOut') AND CloseTime > '2026-12-03T10:13:00.000Z'",
    ]);
  });
});
