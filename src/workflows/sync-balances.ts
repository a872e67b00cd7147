import {
  CancellationScope,
  log,
  patched,
  proxyActivities,
  proxyLocalActivities,
  setCurrentDetails,
  workflowInfo,
} from '@temporalio/workflow';
import { SearchAttributeType, defineSearchAttributeKey } from '@temporalio/common';
import type { Activities, PublishBalancesInput, PublishBalancesResult } from '../activities/index.js';
import { boundaryFor, publishActivityOptions, publishesLabel, racingWriterOptions } from '../sync-timing.js';

export interface SyncBalancesInput {
  /** How many ms before the minute the schedule fires; the activity waits for the boundary. */
  leadMs: number | null;
}

const BACKFILL_THRESHOLD_MS = 30_000;
const MINUTE_MS = 60_000;
const scheduledStartTime = defineSearchAttributeKey(
  'TemporalScheduledStartTime',
  SearchAttributeType.DATETIME,
);

// Runs recorded before the heartbeat patch: a fixed 15 s attempt, no heartbeat.
const unpatched = proxyActivities<Activities>({
  startToCloseTimeout: '15 seconds',
  scheduleToCloseTimeout: '50 seconds',
  retry: { initialInterval: '500 milliseconds', backoffCoefficient: 2, maximumInterval: '5 seconds' },
});

// A KeyDB round trip in the workflow's own worker; failing, the run has one writer as before.
const { syncWriterQueues } = proxyLocalActivities<Activities>({
  startToCloseTimeout: '1 second',
  retry: { maximumAttempts: 2, initialInterval: '100 milliseconds' },
});

/** Publishes every provider's balance to KeyDB at the minute boundary this run was scheduled for. */
export async function SyncBalances(input: SyncBalancesInput): Promise<PublishBalancesResult> {
  const info = workflowInfo();
  const nominal = info.typedSearchAttributes.get(scheduledStartTime) ?? info.startTime;
  // A backfilled run's nominal time is long past: it publishes current balances at once.
  const live = info.startTime.getTime() - nominal.getTime() < BACKFILL_THRESHOLD_MS;
  const leadMs = live ? input.leadMs : null;
  const boundary = boundaryFor(nominal, leadMs);
  const publishes = publishesLabel(boundary);
  setCurrentDetails(publishes);
  // Heartbeats, timeouts derived from the lead, and the minute as the activity's summary.
  const heartbeats = patched('sync-heartbeat-lead-timeouts');
  const request = { nominalTime: nominal.toISOString(), leadMs };
  // A minute waited for in a lead is written by two writers in two instances, so a crash of one
  // inside the lead costs nothing; the fence lets the first through and tells the other `already`.
  if (heartbeats && boundary && leadMs && leadMs > 0 && patched('sync-racing-writers')) {
    const raced = await raceForMinute(boundary, leadMs, publishes, request);
    if (raced) {
      log.info('balances published', { ...raced });
      return raced;
    }
  }
  const { publishBalances } = heartbeats
    ? proxyActivities<Activities>(publishActivityOptions(input.leadMs, publishes))
    : unpatched;
  const result = await publishBalances(request);
  log.info('balances published', { ...result });
  return result;
}

/**
 * Two writers on the own queues of two live instances (a different pair each minute), or undefined
 * when fewer than two are live or neither writer finished: the caller then writes alone, as before.
 */
async function raceForMinute(
  boundary: Date,
  leadMs: number,
  publishes: string,
  request: PublishBalancesInput,
): Promise<PublishBalancesResult | undefined> {
  const queues = await syncWriterQueues().catch((error: unknown) => {
    log.warn('could not list the live instances; one writer for this minute', {
      error: (error as Error).message,
    });
    return [];
  });
  if (queues.length < 2) return undefined;
  const first = Math.floor(boundary.getTime() / MINUTE_MS) % queues.length;
  const pair = [queues[first]!, queues[(first + 1) % queues.length]!];
  return await firstWrite(
    pair.map((taskQueue) => proxyActivities<Activities>(racingWriterOptions(leadMs, publishes, taskQueue))),
    { ...request, racing: true },
  );
}

type Settled = { index: number; result?: PublishBalancesResult; error?: unknown };

/**
 * Runs the writers side by side. The first that wrote KeyDB is the result, and the others are
 * cancelled (a writer on a dead instance never answers). A writer that wrote nothing (`already`,
 * `stale`) is the result only if no other writes; a failed one is logged. Undefined if all failed.
 */
async function firstWrite(
  writers: Pick<Activities, 'publishBalances'>[],
  request: PublishBalancesInput,
): Promise<PublishBalancesResult | undefined> {
  const scopes = writers.map(() => new CancellationScope());
  const pending = new Map<number, Promise<Settled>>(
    writers.map((writer, index) => [
      index,
      scopes[index]!.run(() => writer.publishBalances(request)).then(
        (result): Settled => ({ index, result }),
        (error: unknown): Settled => ({ index, error }),
      ),
    ]),
  );
  let unwritten: PublishBalancesResult | undefined;
  while (pending.size > 0) {
    const settled = await Promise.race(pending.values());
    pending.delete(settled.index);
    if (settled.result?.writtenAt) {
      for (const index of pending.keys()) scopes[index]!.cancel();
      return settled.result;
    }
    if (settled.result) unwritten ??= settled.result;
    else log.warn('a racing writer failed', { writer: settled.index, error: String(settled.error) });
  }
  return unwritten;
}
