import type { Client, ProtoFailure } from '@temporalio/client';
import { ATTEMPT_STOPPED_ERROR } from '../sync-timing.js';

type History = Awaited<ReturnType<ReturnType<Client['workflow']['getHandle']>['fetchHistory']>>;
type HistoryEvent = NonNullable<History['events']>[number];

/**
 * The last run of the schedule that failed or timed out since `since`, and why, as one cause of a
 * stale sync: `runs are failing: the last, sync-balances-…, failed: ReplyError: OOM …`. Reads that
 * run's history once (a SyncBalances history is a dozen events).
 */
export async function lastFailedRun(
  client: Client,
  scheduleId: string,
  since: Date,
  taskQueue: string,
): Promise<string | undefined> {
  const query = `TemporalScheduledById = '${scheduleId}' AND ExecutionStatus IN ('Failed', 'TimedOut') AND CloseTime > '${since.toISOString()}'`;
  for await (const run of client.workflow.list({ query, pageSize: 1 })) {
    const history = await client.workflow.getHandle(run.workflowId, run.runId).fetchHistory();
    const why = whyRunFailed(history.events ?? [], taskQueue);
    return `runs are failing: the last, ${run.workflowId}, ${run.status.name.toLowerCase()}: ${why}`;
  }
  return undefined;
}

/**
 * The latest failure in the run's history (searched newest first) that is not a deadline: a retried
 * activity's run ends on its last attempt's timeout, while the error that kept it failing (KeyDB
 * refusing a write) is an earlier attempt's, kept as the timeout's cause or as the last attempt's
 * `lastFailure`.
 */
export function whyRunFailed(events: HistoryEvent[], taskQueue: string): string {
  const endedOn = failureChain(events.at(-1)?.workflowExecutionFailedEventAttributes?.failure);
  const root = rootCause(events);
  if (root)
    return endedOn && !endedOn.endsWith(root.message)
      ? `${root.text} (the run ended on: ${endedOn})`
      : root.text;
  if (endedOn) return endedOn;
  if (!events.some((event) => event.workflowTaskStartedEventAttributes)) {
    return `no worker took its workflow task: is a worker polling task queue ${taskQueue}?`;
  }
  const pending = events.find((event) => event.activityTaskScheduledEventAttributes);
  const activity = pending?.activityTaskScheduledEventAttributes?.activityType?.name;
  return activity
    ? `timed out before ${activity} finished (a timed-out run keeps no failure of its attempts)`
    : 'timed out, no failure recorded';
}

/** Newest first: the failures an event carries, each read from the outside in, through its causes. */
function rootCause(events: HistoryEvent[]): { message: string; text: string } | undefined {
  for (const event of [...events].reverse()) {
    const failures = [
      event.activityTaskFailedEventAttributes?.failure,
      event.activityTaskTimedOutEventAttributes?.failure,
      event.activityTaskStartedEventAttributes?.lastFailure,
      event.workflowTaskFailedEventAttributes?.failure,
      event.workflowExecutionFailedEventAttributes?.failure,
    ];
    for (let failure of failures) {
      for (let depth = 0; failure && depth < 10; failure = failure.cause, depth++) {
        if (isRootCause(failure)) {
          const type = failure.applicationFailureInfo?.type;
          const message = failure.message ?? '';
          return { message, text: type ? `${type}: ${message}` : message };
        }
      }
    }
  }
  return undefined;
}

/** Not a wrapper (an activity's or child's failure), not a deadline, cancellation or a stopped attempt. */
function isRootCause(failure: ProtoFailure): boolean {
  return !(
    failure.activityFailureInfo ||
    failure.childWorkflowExecutionFailureInfo ||
    failure.timeoutFailureInfo ||
    failure.canceledFailureInfo ||
    failure.terminatedFailureInfo ||
    failure.applicationFailureInfo?.type === ATTEMPT_STOPPED_ERROR
  );
}

/** "Activity task failed: Activity task timed out": each message from the outside in. */
function failureChain(failure: ProtoFailure | null | undefined): string {
  const messages: string[] = [];
  for (let f = failure; f && messages.length < 5; f = f.cause) if (f.message) messages.push(f.message);
  return messages.join(': ');
}
