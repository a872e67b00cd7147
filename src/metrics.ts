import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Metric constructors bound to one registry: a name, its help, then its label names (or buckets). */
function metricsOn(registry: Registry) {
  const registers = [registry];
  return {
    counter: <L extends string = string>(name: string, help: string, ...labelNames: L[]) =>
      new Counter<L>({ name, help, labelNames, registers }),
    gauge: <L extends string = string>(name: string, help: string, ...labelNames: L[]) =>
      new Gauge<L>({ name, help, labelNames, registers }),
    histogram: (name: string, help: string, buckets: number[]) =>
      new Histogram<string>({ name, help, buckets, registers }),
  };
}

type MetricMaker = ReturnType<typeof metricsOn>;

/** Ingest: the bridge starting IngestTransaction runs, and their activities. */
const ingestMetrics = (m: MetricMaker) => ({
  messagesConsumed: m.counter(
    'balance_sync_messages_consumed_total',
    'Messages delivered to the bridge from the incoming queue',
  ),
  messagesAcked: m.counter(
    'balance_sync_messages_acked_total',
    'Messages acked after Temporal accepted (or already had) their IngestTransaction',
    'outcome',
  ),
  workflowStartSeconds: m.histogram(
    'balance_sync_workflow_start_seconds',
    'Time for Temporal to accept an IngestTransaction start',
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  ),
  workflowStarts: m.counter(
    'balance_sync_workflow_starts_total',
    'New IngestTransaction runs, by how their first workflow task reached the worker: eager (with the start reply, to this process) or task_queue (no free workflow-task slot here, or eager start off: through matching and a poll)',
    'dispatch',
  ),
  ingestEndToEndSeconds: m.histogram(
    'balance_sync_ingest_end_to_end_seconds',
    'From the bridge receiving a message to its row being committed',
    [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  ),
  transactionsRecorded: m.counter(
    'balance_sync_transactions_recorded_total',
    'recordTransaction outcomes: inserted, or duplicate (the ingest key was already recorded)',
    'outcome',
  ),
  ingestWorkflowsRunning: m.gauge(
    'balance_sync_ingest_workflows_running',
    'Unfinished IngestTransaction runs on the ingest task queue (all instances), at the last count',
  ),
  ingestOutage: m.gauge(
    'balance_sync_ingest_outage',
    '1 while the ingest path retries an outage of this dependency (down, read-only, a revoked grant or credential)',
    'dependency',
  ),
  ingestInsertRetries: m.counter(
    'balance_sync_ingest_insert_retries_total',
    'Failed recordTransaction attempts that will be retried, by SQLSTATE class (none: a client-side error)',
    'sqlstate_class',
  ),
});

/** The bridge's consumer: deliveries held, handed back or let go; the throttle and the sync hold. */
const bridgeMetrics = (m: MetricMaker) => ({
  deliveriesInFlight: m.gauge(
    'balance_sync_bridge_deliveries_in_flight',
    'Deliveries the bridge holds unacked: being started, dead-lettered, or waiting for the throttle',
  ),
  messagesRequeued: m.counter(
    'balance_sync_messages_requeued_total',
    'Deliveries handed back to RabbitMQ (nack, requeue) after bounded retries, by reason',
    'reason',
  ),
  deliveriesReleased: m.counter(
    'balance_sync_deliveries_released_total',
    'Deliveries let go without an ack because their channel closed (the broker owns them again), by reason',
    'reason',
  ),
  possibleDuplicates: m.counter(
    'balance_sync_possible_duplicates_total',
    'Messages without message_id handed back to RabbitMQ without their workflow ID after a start was sent (the channel closed, or the copy carrying the ID was refused): each may be recorded twice, by cause',
    'cause',
  ),
  consumerCancellations: m.counter(
    'balance_sync_consumer_cancellations_total',
    'Times the broker stopped our consumer: cancel (basic.cancel, e.g. queue deleted), channel_closed, or connection_lost',
    'cause',
  ),
  bridgeConsumerPaused: m.gauge(
    'balance_sync_bridge_consumer_paused',
    '1 while the bridge takes no deliveries (consumer cancelled): Temporal unreachable or the throttle closed',
  ),
  bridgeThrottled: m.gauge(
    'balance_sync_bridge_throttled',
    '1 while the bridge starts nothing because BRIDGE_MAX_IN_FLIGHT ingest workflows are unfinished',
  ),
  bridgeThrottleStalled: m.gauge(
    'balance_sync_bridge_throttle_stalled',
    '1 while the throttle has stayed closed longer than its stated bound with no ingest run finishing',
  ),
  bridgeSyncHolding: m.gauge(
    'balance_sync_bridge_sync_holding',
    '1 while new ingest starts wait for the minute’s sync (ingest saturated; BRIDGE_HOLD_FOR_SYNC)',
  ),
  bridgeSyncHolds: m.counter(
    'balance_sync_bridge_sync_holds_total',
    'Minutes at which new ingest starts waited for the sync because ingest was saturated',
  ),
  bridgeSyncHeldSeconds: m.counter(
    'balance_sync_bridge_sync_held_seconds_total',
    'Seconds new ingest starts waited for the minute’s sync, all holds together',
  ),
});

/** Dead letters. */
const deadLettersMetrics = (m: MetricMaker) => ({
  messagesDeadLettered: m.counter(
    'balance_sync_messages_dead_lettered_total',
    'Messages moved to the dead-letter queue, by reason code',
    'code',
  ),
  deadLetterPublishFailures: m.counter(
    'balance_sync_dead_letter_publish_failures_total',
    'Failed attempts to dead-letter a message after its ack (retried until accepted), by reason code; terminated: a failed sweep for operator-terminated runs',
    'code',
  ),
});

/** The per-minute sync to KeyDB. */
const syncMetrics = (m: MetricMaker) => ({
  syncLastPublished: m.gauge(
    'balance_sync_sync_last_published_timestamp_seconds',
    'The minute boundary last written to KeyDB by the sync schedule (unix s), read from Postgres by every instance; 0 until one is',
  ),
  syncWriteOffsetSeconds: m.histogram(
    'balance_sync_sync_write_offset_seconds',
    'KeyDB write time minus the minute boundary it belongs to',
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5],
  ),
  clockSkewSeconds: m.gauge(
    'balance_sync_clock_skew_seconds',
    "This worker's clock minus the peer's (temporal, postgres, keydb), estimated at each sync attempt",
    'peer',
  ),
  syncUnpublishableProviders: m.gauge(
    'balance_sync_sync_unpublishable_providers',
    'Providers the last sync did not publish (a NaN/Infinity in their history, or a NULL); KeyDB keeps their last good value',
  ),
  syncRetriesSkipped: m.counter(
    'balance_sync_sync_retries_skipped_total',
    'Retried publishBalances attempts that wrote nothing because their minute was already published',
  ),
  keydbWritesRefused: m.counter(
    'balance_sync_keydb_writes_refused_total',
    'Sync writes KeyDB refused, never applied (src/keydb/fenced-write.ts): stale (a newer minute was already there) or past_deadline (it arrived after its writer stopped waiting)',
    'reason',
  ),
});

/** The sync and reconcile schedules, as the watch finds them. */
const schedulesMetrics = (m: MetricMaker) => ({
  syncSchedulePaused: m.gauge(
    'balance_sync_sync_schedule_paused',
    '1 while the sync schedule is paused (an operator decision: no minute is published until it is unpaused)',
  ),
  syncScheduleRecreated: m.counter(
    'balance_sync_sync_schedule_recreated_total',
    'Schedules (sync or reconcile) this instance found deleted and created again',
    'schedule',
  ),
  syncScheduleRestored: m.counter(
    'balance_sync_sync_schedule_restored_total',
    "Schedules (sync or reconcile) this instance found edited at runtime (spec, action or policies) and restored to the app's definition",
    'schedule',
  ),
  syncScheduleRestoreFailures: m.counter(
    'balance_sync_sync_schedule_restore_failures_total',
    'Schedules (sync or reconcile) found edited at runtime that this instance could not write back (retried at its next look)',
    'schedule',
  ),
  syncScheduleStampRenewed: m.counter(
    'balance_sync_sync_schedule_stamp_renewed_total',
    'Schedules (sync or reconcile) whose definition stamp this instance completed, nothing else changed (one after a create whose stamp failed; a rising count is a rewrite loop)',
    'schedule',
  ),
  syncScheduleOtherSettings: m.gauge(
    'balance_sync_sync_schedule_other_settings',
    'Per schedule: 1 while it was last written by an instance with other settings (or another stamp format or @temporalio/client version); the watch leaves it alone, start-up writes over it',
    'schedule',
  ),
});

/** Reconciliation of the running sums. */
const reconcileMetrics = (m: MetricMaker) => ({
  reconcileDrift: m.gauge(
    'balance_sync_reconcile_drift_providers',
    'Providers whose running sum differed from the full aggregate at the last reconciliation',
  ),
  reconcileDriftTotal: m.counter(
    'balance_sync_reconcile_drift_corrections_total',
    'Provider sums corrected by reconciliation',
  ),
});

/** The balance history in Postgres. */
const historyMetrics = (m: MetricMaker) => ({
  balanceHistoryUnrecorded: m.counter(
    'balance_sync_balance_history_unrecorded_total',
    'KeyDB writes that could not be recorded in Postgres (retry fence and balance history): a gap in the history',
  ),
  balanceHistoryPrunedRows: m.counter(
    'balance_sync_balance_history_pruned_rows_total',
    'Rows of the balance history deleted for being older than BALANCE_HISTORY_DAYS',
  ),
});

/** Connections to the dependencies. */
const connectionsMetrics = (m: MetricMaker) => ({
  dependencyUp: m.gauge(
    'balance_sync_dependency_up',
    '1 while the dependency answers its readiness check (the same state as /readyz), else 0',
    'dependency',
  ),
  rabbitmqConnectionsLost: m.counter(
    'balance_sync_rabbitmq_connections_lost_total',
    'RabbitMQ connections lost (heartbeat timeout, closed by the broker, socket error) and reconnected with backoff, by connection: consuming or publishing',
    'connection',
  ),
  rabbitmqBlocked: m.gauge(
    'balance_sync_rabbitmq_blocked',
    '1 while RabbitMQ blocks one of our connections (resource alarm: memory or disk)',
  ),
});

/** The app's own Prometheus metrics; Temporal's runtime metrics are appended by the HTTP server. */
export function createMetrics() {
  const registry = new Registry();
  // prom-client's default names already start with process_ or nodejs_: this gives
  // balance_sync_process_cpu_seconds_total and balance_sync_nodejs_eventloop_lag_seconds.
  collectDefaultMetrics({ register: registry, prefix: 'balance_sync_' });
  const make = metricsOn(registry);
  const metrics = {
    registry,
    ...ingestMetrics(make),
    ...bridgeMetrics(make),
    ...deadLettersMetrics(make),
    ...syncMetrics(make),
    ...schedulesMetrics(make),
    ...reconcileMetrics(make),
    ...historyMetrics(make),
    ...connectionsMetrics(make),
  };
  // A labelled counter is exported from its first inc(): at 0 from the start, increase() in an alert
  // sees its first increment. The label is the schedule's role, the same whatever its configured ID.
  for (const schedule of ['sync', 'reconcile'] as const) {
    for (const counter of [
      metrics.syncScheduleRecreated,
      metrics.syncScheduleRestored,
      metrics.syncScheduleRestoreFailures,
      metrics.syncScheduleStampRenewed,
    ])
      counter.inc({ schedule }, 0);
  }
  for (const reason of ['stale', 'past_deadline'] as const) metrics.keydbWritesRefused.inc({ reason }, 0);
  return metrics;
}

export type AppMetrics = ReturnType<typeof createMetrics>;
