import { MockActivityEnvironment } from '@temporalio/testing';
import type { Redis } from 'ioredis';
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { createActivities } from '../../src/activities/index.js';
import { createMetrics } from '../../src/metrics.js';
import { activityLogger } from '../support/activity-logger.js';

/** A pool that refuses everything, naming itself, so a failure tells which pool an activity used. */
const refusing = (name: string) => {
  const refuse = () => Promise.reject(new Error(`${name} pool`));
  return { query: refuse, connect: refuse } as unknown as pg.Pool;
};
/** A KeyDB that answers; publishBalances opens its writes' connection from it (duplicate). */
const writer = { on: () => writer, defineCommand: () => undefined, time: () => Promise.resolve(['0', '0']) };
const keydb = {
  ping: () => Promise.resolve('PONG'),
  duplicate: () => writer,
  once: () => undefined,
} as unknown as Redis;
const env = new MockActivityEnvironment(
  { startToCloseTimeoutMs: 0, scheduleToCloseTimeoutMs: 0 },
  { logger: activityLogger() },
);
const now = { nominalTime: new Date().toISOString(), leadMs: null };
const record = { ingestKey: 'k', providerId: 1, value: '1' };

describe('createActivities', () => {
  it('gives the sync and the reconciliation their own pools when it has them', async () => {
    const activities = createActivities({
      pool: refusing('ingest'),
      syncPool: refusing('sync'),
      reconcilePool: refusing('reconcile'),
      keydb,
      metrics: createMetrics(),
    });
    await expect(env.run(activities.recordTransaction, record)).rejects.toThrow('ingest pool');
    await expect(env.run(activities.publishBalances, now)).rejects.toThrow('sync pool');
    await expect(env.run(activities.reconcileBalances)).rejects.toThrow('reconcile pool');
  });

  it('falls back to the ingest pool for both', async () => {
    const activities = createActivities({ pool: refusing('ingest'), keydb, metrics: createMetrics() });
    await expect(env.run(activities.publishBalances, now)).rejects.toThrow('ingest pool');
    await expect(env.run(activities.reconcileBalances)).rejects.toThrow('ingest pool');
  });
});
