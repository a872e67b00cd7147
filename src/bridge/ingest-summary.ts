import type { Logger } from 'pino';
import type { Counter } from 'prom-client';
import type { AppMetrics } from '../metrics.js';

/** Sum of a counter's values, by one label (or all under 'total'). */
async function totals(counter: Counter<string>, label?: string): Promise<Record<string, number>> {
  const sums: Record<string, number> = {};
  for (const { labels, value } of (await counter.get()).values) {
    const key = label ? String(labels[label] ?? 'unknown') : 'total';
    sums[key] = (sums[key] ?? 0) + value;
  }
  return sums;
}

function minus(now: Record<string, number>, before: Record<string, number>): Record<string, number> {
  return Object.fromEntries(
    Object.entries(now)
      .map(([key, value]) => [key, value - (before[key] ?? 0)] as const)
      .filter(([, value]) => value !== 0),
  );
}

const sum = (values: Record<string, number>) => Object.values(values).reduce((a, b) => a + b, 0);

/**
 * Logs, every `intervalMs`, what the ingest path did since the last line: messages consumed, started,
 * duplicates, rows recorded, dead-lettered and requeued (by reason), and what is in flight now. A quiet
 * log means quiet traffic. Returns a function that stops it.
 */
export function startIngestSummary(
  metrics: AppMetrics,
  log: Logger,
  intervalMs: number,
  now: () => { inFlight: number; throttled: boolean },
): () => void {
  if (intervalMs <= 0) return () => undefined;
  const read = async () => ({
    consumed: await totals(metrics.messagesConsumed),
    acked: await totals(metrics.messagesAcked, 'outcome'),
    recorded: await totals(metrics.transactionsRecorded, 'outcome'),
    deadLettered: await totals(metrics.messagesDeadLettered, 'code'),
    requeued: await totals(metrics.messagesRequeued, 'reason'),
  });
  let previous = read();
  const timer = setInterval(() => {
    const before = previous;
    previous = read();
    void Promise.all([before, previous]).then(([a, b]) => {
      const deadLettered = minus(b.deadLettered, a.deadLettered);
      const requeued = minus(b.requeued, a.requeued);
      log.info(
        {
          intervalSeconds: intervalMs / 1000,
          consumed: sum(minus(b.consumed, a.consumed)),
          started: minus(b.acked, a.acked).started ?? 0,
          duplicates: minus(b.acked, a.acked).existing ?? 0,
          recorded: minus(b.recorded, a.recorded).inserted ?? 0,
          deadLettered: sum(deadLettered),
          deadLetteredByCode: deadLettered,
          requeued: sum(requeued),
          requeuedByReason: requeued,
          ...now(),
        },
        'ingest summary',
      );
    });
  }, intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
