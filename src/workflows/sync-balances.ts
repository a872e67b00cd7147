import { log, patched, proxyActivities, setCurrentDetails, workflowInfo } from '@temporalio/workflow';
import { SearchAttributeType, defineSearchAttributeKey } from '@temporalio/common';
import type { Activities, PublishBalancesResult } from '../activities/index.js';
import { boundaryFor, publishActivityOptions, publishesLabel } from '../sync-timing.js';

export interface SyncBalancesInput {
  /** How many ms before the minute the schedule fires; the activity waits for the boundary. */
  leadMs: number | null;
}

const BACKFILL_THRESHOLD_MS = 30_000;
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

/** Publishes every provider's balance to KeyDB at the minute boundary this run was scheduled for. */
export async function SyncBalances(input: SyncBalancesInput): Promise<PublishBalancesResult> {
  const info = workflowInfo();
  const nominal = info.typedSearchAttributes.get(scheduledStartTime) ?? info.startTime;
  // A backfilled run's nominal time is long past: it publishes current balances at once.
  const live = info.startTime.getTime() - nominal.getTime() < BACKFILL_THRESHOLD_MS;
  const leadMs = live ? input.leadMs : null;
  const publishes = publishesLabel(boundaryFor(nominal, leadMs));
  setCurrentDetails(publishes);
  // Heartbeats, timeouts derived from the lead, and the minute as the activity's summary.
  const { publishBalances } = patched('sync-heartbeat-lead-timeouts')
    ? proxyActivities<Activities>(publishActivityOptions(input.leadMs, publishes))
    : unpatched;
  const result = await publishBalances({ nominalTime: nominal.toISOString(), leadMs });
  log.info('balances published', { ...result });
  return result;
}
