import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** The app's own Prometheus metrics; Temporal's runtime metrics are appended by the HTTP server. */
export function createMetrics() {
  const registry = new Registry();
  // prom-client's default names already start with process_ or nodejs_: this gives
  // balance_sync_process_cpu_seconds_total and balance_sync_nodejs_eventloop_lag_seconds.
  collectDefaultMetrics({ register: registry, prefix: 'balance_sync_' });
  const registers = [registry];
  const metrics = {
    registry,
    messagesConsumed: new Counter({
      name: 'balance_sync_messages_consumed_total',
      help: 'Messages delivered to the bridge from the incoming queue',
      registers,
    }),
    messagesAcked: new Counter({
      name: 'balance_sync_messages_acked_total',
      help: 'Messages acked after Temporal accepted (or already had) their IngestTransaction',
      labelNames: ['outcome'] as const,
      registers,
    }),
    messagesDeadLettered: new Counter({
      name: 'balance_sync_messages_dead_lettered_total',
      help: 'Messages moved to the dead-letter queue, by reason code',
      labelNames: ['code'] as const,
      registers,
    }),
    workflowStartSeconds: new Histogram({
      name: 'balance_sync_workflow_start_seconds',
      help: 'Time for Temporal to accept an IngestTransaction start',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
    ingestEndToEndSeconds: new Histogram({
      name: 'balance_sync_ingest_end_to_end_seconds',
      help: 'From the bridge receiving a message to its row being committed',
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    syncWriteOffsetSeconds: new Histogram({
      name: 'balance_sync_sync_write_offset_seconds',
      help: 'KeyDB write time minus the minute boundary it belongs to',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5],
      registers,
    }),
    clockSkewSeconds: new Gauge({
      name: 'balance_sync_clock_skew_seconds',
      help: "This worker's clock minus the peer's (temporal, postgres, keydb), estimated at each sync attempt",
      labelNames: ['peer'] as const,
      registers,
    }),
    reconcileDrift: new Gauge({
      name: 'balance_sync_reconcile_drift_providers',
      help: 'Providers whose running sum differed from the full aggregate at the last reconciliation',
      registers,
    }),
    reconcileDriftTotal: new Counter({
      name: 'balance_sync_reconcile_drift_corrections_total',
      help: 'Provider sums corrected by reconciliation',
      registers,
    }),
    transactionsRecorded: new Counter({
      name: 'balance_sync_transactions_recorded_total',
      help: 'recordTransaction outcomes: inserted, or duplicate (the ingest key was already recorded)',
      labelNames: ['outcome'] as const,
      registers,
    }),
    consumerCancellations: new Counter({
      name: 'balance_sync_consumer_cancellations_total',
      help: 'Times the broker stopped our consumer: cancel (basic.cancel, e.g. queue deleted), channel_closed, or connection_lost',
      labelNames: ['cause'] as const,
      registers,
    }),
    deadLetterPublishFailures: new Counter({
      name: 'balance_sync_dead_letter_publish_failures_total',
      help: 'Failed attempts to dead-letter a message after its ack (retried until accepted), by reason code; terminated: a failed sweep for operator-terminated runs',
      labelNames: ['code'] as const,
      registers,
    }),
    messagesRequeued: new Counter({
      name: 'balance_sync_messages_requeued_total',
      help: 'Deliveries handed back to RabbitMQ (nack, requeue) after bounded retries, by reason',
      labelNames: ['reason'] as const,
      registers,
    }),
    deliveriesInFlight: new Gauge({
      name: 'balance_sync_bridge_deliveries_in_flight',
      help: 'Deliveries the bridge holds unacked: being started, dead-lettered, or waiting for the throttle',
      registers,
    }),
    possibleDuplicates: new Counter({
      name: 'balance_sync_possible_duplicates_total',
      help: 'Messages without message_id handed back to RabbitMQ without their workflow ID after a start was sent (the channel closed, or the copy carrying the ID was refused): each may be recorded twice, by cause',
      labelNames: ['cause'] as const,
      registers,
    }),
    deliveriesReleased: new Counter({
      name: 'balance_sync_deliveries_released_total',
      help: 'Deliveries let go without an ack because their channel closed (the broker owns them again), by reason',
      labelNames: ['reason'] as const,
      registers,
    }),
    bridgeConsumerPaused: new Gauge({
      name: 'balance_sync_bridge_consumer_paused',
      help: '1 while the bridge takes no deliveries (consumer cancelled): Temporal unreachable or the throttle closed',
      registers,
    }),
    rabbitmqConnectionsLost: new Counter({
      name: 'balance_sync_rabbitmq_connections_lost_total',
      help: 'RabbitMQ connections lost (heartbeat timeout, closed by the broker, socket error) and reconnected with backoff, by connection: consuming or publishing',
      labelNames: ['connection'] as const,
      registers,
    }),
    rabbitmqBlocked: new Gauge({
      name: 'balance_sync_rabbitmq_blocked',
      help: '1 while RabbitMQ blocks one of our connections (resource alarm: memory or disk)',
      registers,
    }),
    bridgeThrottled: new Gauge({
      name: 'balance_sync_bridge_throttled',
      help: '1 while the bridge starts nothing because BRIDGE_MAX_IN_FLIGHT ingest workflows are unfinished',
      registers,
    }),
    ingestWorkflowsRunning: new Gauge({
      name: 'balance_sync_ingest_workflows_running',
      help: 'Unfinished IngestTransaction runs on the ingest task queue (all instances), at the last count',
      registers,
    }),
    ingestOutage: new Gauge({
      name: 'balance_sync_ingest_outage',
      help: '1 while the ingest path retries an outage of this dependency (down, read-only, a revoked grant or credential)',
      labelNames: ['dependency'] as const,
      registers,
    }),
    ingestInsertRetries: new Counter({
      name: 'balance_sync_ingest_insert_retries_total',
      help: 'Failed recordTransaction attempts that will be retried, by SQLSTATE class (none: a client-side error)',
      labelNames: ['sqlstate_class'] as const,
      registers,
    }),
    bridgeSyncHolding: new Gauge({
      name: 'balance_sync_bridge_sync_holding',
      help: '1 while new ingest starts wait for the minute’s sync (ingest saturated; BRIDGE_HOLD_FOR_SYNC)',
      registers,
    }),
    bridgeSyncHolds: new Counter({
      name: 'balance_sync_bridge_sync_holds_total',
      help: 'Minutes at which new ingest starts waited for the sync because ingest was saturated',
      registers,
    }),
    bridgeSyncHeldSeconds: new Counter({
      name: 'balance_sync_bridge_sync_held_seconds_total',
      help: 'Seconds new ingest starts waited for the minute’s sync, all holds together',
      registers,
    }),
    bridgeThrottleStalled: new Gauge({
      name: 'balance_sync_bridge_throttle_stalled',
      help: '1 while the throttle has stayed closed longer than its stated bound with no ingest run finishing',
      registers,
    }),
    syncUnpublishableProviders: new Gauge({
      name: 'balance_sync_sync_unpublishable_providers',
      help: 'Providers the last sync did not publish (a NaN/Infinity in their history, or a NULL); KeyDB keeps their last good value',
      registers,
    }),
    syncRetriesSkipped: new Counter({
      name: 'balance_sync_sync_retries_skipped_total',
      help: 'Retried publishBalances attempts that wrote nothing because their minute was already published',
      registers,
    }),
    keydbWritesRefused: new Counter({
      name: 'balance_sync_keydb_writes_refused_total',
      help: 'Sync writes KeyDB refused, never applied (src/keydb/fenced-write.ts): stale (a newer minute was already there) or past_deadline (it arrived after its writer stopped waiting)',
      labelNames: ['reason'] as const,
      registers,
    }),
    balanceHistoryUnrecorded: new Counter({
      name: 'balance_sync_balance_history_unrecorded_total',
      help: 'KeyDB writes that could not be recorded in Postgres (retry fence and balance history): a gap in the history',
      registers,
    }),
    balanceHistoryPrunedRows: new Counter({
      name: 'balance_sync_balance_history_pruned_rows_total',
      help: 'Rows of the balance history deleted for being older than BALANCE_HISTORY_DAYS',
      registers,
    }),
    syncLastPublished: new Gauge({
      name: 'balance_sync_sync_last_published_timestamp_seconds',
      help: 'The minute boundary last written to KeyDB by the sync schedule (unix s), read from Postgres by every instance; 0 until one is',
      registers,
    }),
    syncSchedulePaused: new Gauge({
      name: 'balance_sync_sync_schedule_paused',
      help: '1 while the sync schedule is paused (an operator decision: no minute is published until it is unpaused)',
      registers,
    }),
    syncScheduleRecreated: new Counter({
      name: 'balance_sync_sync_schedule_recreated_total',
      help: 'Schedules (sync or reconcile) this instance found deleted and created again',
      labelNames: ['schedule'] as const,
      registers,
    }),
    syncScheduleRestored: new Counter({
      name: 'balance_sync_sync_schedule_restored_total',
      help: "Schedules (sync or reconcile) this instance found edited at runtime (spec, action or policies) and restored to the app's definition",
      labelNames: ['schedule'] as const,
      registers,
    }),
    syncScheduleRestoreFailures: new Counter({
      name: 'balance_sync_sync_schedule_restore_failures_total',
      help: 'Schedules (sync or reconcile) found edited at runtime that this instance could not write back (retried at its next look)',
      labelNames: ['schedule'] as const,
      registers,
    }),
    syncScheduleStampRenewed: new Counter({
      name: 'balance_sync_sync_schedule_stamp_renewed_total',
      help: 'Schedules (sync or reconcile) whose definition stamp this instance completed, nothing else changed (one after a create whose stamp failed; a rising count is a rewrite loop)',
      labelNames: ['schedule'] as const,
      registers,
    }),
    syncScheduleOtherSettings: new Gauge({
      name: 'balance_sync_sync_schedule_other_settings',
      help: 'Per schedule: 1 while it was last written by an instance with other settings (or another stamp format or @temporalio/client version); the watch leaves it alone, start-up writes over it',
      labelNames: ['schedule'] as const,
      registers,
    }),
    dependencyUp: new Gauge({
      name: 'balance_sync_dependency_up',
      help: '1 while the dependency answers its readiness check (the same state as /readyz), else 0',
      labelNames: ['dependency'] as const,
      registers,
    }),
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
