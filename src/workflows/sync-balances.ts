import { log, proxyActivities, workflowInfo } from '@temporalio/workflow';
import { SearchAttributeType, defineSearchAttributeKey } from '@temporalio/common';
import type { Activities, PublishBalancesResult } from '../activities/index.js';

export interface SyncBalancesInput {
  /** How many ms before the minute the schedule fires; the activity waits for the boundary. */
  leadMs: number;
}

const BACKFILL_THRESHOLD_MS = 30_000;
const scheduledStartTime = defineSearchAttributeKey(
  'TemporalScheduledStartTime',
  SearchAttributeType.DATETIME,
);

// Retries with backoff while Postgres or KeyDB is down, but gives up well before the next tick,
// so failed runs never pile up and the next minute starts fresh.
const { publishBalances } = proxyActivities<Activities>({
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
  const result = await publishBalances({
    nominalTime: nominal.toISOString(),
    leadMs: live ? input.leadMs : null,
  });
  log.info('balances published', { ...result });
  return result;
}
