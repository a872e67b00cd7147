// Publishes at a fixed rate and remembers when each message was sent.
import type pg from 'pg';
import { benchMessage, publisher } from './services.js';
import { progress, summarize, type Summary } from './util.js';

export interface PacedPublisher {
  /** messageId -> epoch ms at which it was handed to the broker. */
  sentAt: Map<string, number>;
  stop(): Promise<{ sent: number; seconds: number }>;
}

/** Sends `rate` messages per second (ids `<prefix>-<seq>`) until stopped; confirms every 200 ms. */
export async function startPaced(
  queue: string,
  prefix: string,
  rate: number,
  providers: number,
): Promise<PacedPublisher> {
  const pub = await publisher(queue);
  const sentAt = new Map<string, number>();
  const started = performance.now();
  let sent = 0;
  let confirming: Promise<void> | undefined;
  let lastConfirm = started;
  const timer = setInterval(() => {
    const due = Math.floor(((performance.now() - started) / 1000) * rate);
    while (sent < due) {
      const message = benchMessage(prefix, sent, providers);
      sentAt.set(message.messageId, pub.send(message));
      sent++;
    }
    if (!confirming && performance.now() - lastConfirm > 200) {
      lastConfirm = performance.now();
      confirming = pub.confirm().finally(() => (confirming = undefined));
      confirming.catch((error: unknown) => progress(`publish confirm failed: ${(error as Error).message}`));
    }
  }, 5);
  return {
    sentAt,
    async stop() {
      clearInterval(timer);
      const seconds = (performance.now() - started) / 1000;
      await pub.confirm();
      await pub.close();
      return { sent, seconds };
    },
  };
}

/**
 * Publish-to-row latency: the ledger's ingested_at (the inserting transaction's start time, i.e. within
 * the statement) minus the publish time, for every message of `prefix` that has a row.
 */
export async function publishToRowLatency(
  pool: pg.Pool,
  prefix: string,
  sentAt: Map<string, number>,
): Promise<{ latency: Summary; missing: number }> {
  const { rows } = await pool.query<{ key: string; at: string }>(
    `SELECT ingest_key AS key, (extract(epoch FROM ingested_at) * 1000)::text AS at
     FROM balance_sync_ingest_ledger WHERE ingest_key LIKE $1`,
    [`ingest-${prefix}-%`],
  );
  const latencies: number[] = [];
  for (const row of rows) {
    const sent = sentAt.get(row.key.slice('ingest-'.length));
    if (sent !== undefined) latencies.push(Number(row.at) - sent);
  }
  return { latency: summarize(latencies), missing: sentAt.size - latencies.length };
}
