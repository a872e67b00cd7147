// When a minute's balances reached KeyDB, seen two ways: the SyncBalances result's writeOffsetMs, and
// the first sighting of a sentinel key's change by a poller. Shared by bench:sync-precision and
// bench:metrics-flood.
import type { Client, ScheduleHandle } from '@temporalio/client';
import type { Redis } from 'ioredis';
import { fmt, sleep } from './util.js';

/** When the run's steps happened, relative to the boundary, and the attempt that wrote. */
export interface SyncTimeline {
  runStartedMs: number | null;
  firstTaskStartedMs: number | null;
  activityScheduledMs: number | null;
  /** The last attempt's start (the history keeps only the last attempt's). */
  activityStartedMs: number | null;
  attempt: number | null;
  /** The failure that ended the previous attempt, if the writing one was a retry. */
  lastFailure: string | null;
}

export interface SyncResult {
  writeOffsetMs: number | null;
  readMs: number;
  writeMs: number;
}

export async function waitUntil(epochMs: number): Promise<void> {
  const wait = epochMs - Date.now();
  if (wait > 0) await sleep(wait);
}

/** Polls `key` until it differs from `before`; returns the epoch ms of the first sighting, or null. */
export async function pollForChange(
  keydb: Redis,
  key: string,
  before: string | null,
  untilMs: number,
): Promise<number | null> {
  while (Date.now() < untilMs) {
    const value = await keydb.get(key);
    const seenAt = Date.now();
    if (value !== before) return seenAt;
    await sleep(1);
  }
  return null;
}

/** The schedule's run for `boundary` (fired `leadSeconds` before it): its result, timeline and fire lag. */
export async function workflowResult(
  client: Client,
  schedule: ScheduleHandle,
  leadSeconds: number,
  boundary: number,
) {
  const description = await schedule.describe();
  const action = description.info.recentActions.find(
    (entry) => Math.abs(entry.scheduledAt.getTime() + leadSeconds * 1000 - boundary) < 1500,
  );
  if (!action) return undefined;
  const handle = client.workflow.getHandle(
    action.action.workflow.workflowId,
    action.action.workflow.firstExecutionRunId,
  );
  const result = (await Promise.race([handle.result(), sleep(20_000).then(() => undefined)])) as
    SyncResult | undefined;
  const timeline = await handle
    .fetchHistory()
    .then((history) => syncTimeline(history.events ?? [], boundary))
    .catch(() => null);
  return { result, timeline, fireLagMs: action.takenAt.getTime() - action.scheduledAt.getTime() };
}

type HistoryEvent = NonNullable<
  Awaited<ReturnType<ReturnType<Client['workflow']['getHandle']>['fetchHistory']>>['events']
>[number];

export function syncTimeline(events: HistoryEvent[], boundary: number): SyncTimeline {
  const at = (pick: (event: HistoryEvent) => unknown) => {
    const event = events.find((candidate) => pick(candidate));
    const time = event?.eventTime;
    return time ? Number(time.seconds) * 1000 + Math.round((time.nanos ?? 0) / 1e6) - boundary : null;
  };
  const started = events.find(
    (event) => event.activityTaskStartedEventAttributes,
  )?.activityTaskStartedEventAttributes;
  return {
    runStartedMs: at((event) => event.workflowExecutionStartedEventAttributes),
    firstTaskStartedMs: at((event) => event.workflowTaskStartedEventAttributes),
    activityScheduledMs: at((event) => event.activityTaskScheduledEventAttributes),
    activityStartedMs: at((event) => event.activityTaskStartedEventAttributes),
    attempt: started?.attempt ?? null,
    lastFailure: started?.lastFailure?.message ?? null,
  };
}

export const timelineCell = (t: SyncTimeline | null) =>
  t
    ? `${fmt(t.runStartedMs)} / ${fmt(t.firstTaskStartedMs)} / ${fmt(t.activityScheduledMs)} / ${fmt(t.activityStartedMs)}` +
      (t.attempt && t.attempt > 1 ? ` (attempt ${t.attempt}: ${t.lastFailure ?? 'no failure kept'})` : '')
    : '–';
