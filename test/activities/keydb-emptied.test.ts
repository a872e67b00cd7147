import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createPublishBalances, type PublishBalancesResult } from '../../src/activities/publish-balances.js';
import { FENCE_KEY } from '../../src/keydb/fenced-write.js';
import { balancesAt } from '../../src/history/balance-history.js';
import { createMetrics } from '../../src/metrics.js';
import { migrate } from '../../src/postgres/schema.js';
import { activityLogger } from '../support/activity-logger.js';
import { keydbBalances } from '../support/harness.js';
import { isolatedStores, type IsolatedStores } from '../support/isolated-stores.js';

/**
 * KeyDB emptied (FLUSHDB on a Redis of this file's own) while a provider cannot be published: the
 * next minute gives its key back its last good value, the balance history's, and the fence again.
 */
let stores: IsolatedStores;
const metrics = createMetrics();
const logger = activityLogger();

beforeAll(async () => {
  stores = await isolatedStores('balance_sync_keydb_emptied');
  await migrate(stores.db);
});

afterAll(async () => {
  await stores?.stop();
});

afterEach(() => {
  vi.useRealTimers();
});

const M1 = Date.parse('2030-01-01T10:01:00Z');
const MINUTE = 60_000;
const publishMinute = (boundary: number): Promise<PublishBalancesResult> => {
  vi.useFakeTimers({ toFake: ['Date'], now: boundary + 12 });
  const attempt = new MockActivityEnvironment(
    { startToCloseTimeoutMs: 0, scheduleToCloseTimeoutMs: 0 },
    { logger },
  );
  return attempt.run(createPublishBalances(stores.db, stores.keydb, metrics), {
    nominalTime: new Date(boundary - 5_000).toISOString(),
    leadMs: 5_000,
  });
};

describe('KeyDB emptied while a provider cannot be published', () => {
  it('gives 2_Mastercard (held back by a NaN row) its last good value from the history at the next minute', async () => {
    const { db, keydb } = stores;
    await db.query(`INSERT INTO initial_data (id, provider_name, initial_value) VALUES (9, 'Never', 'NaN')`);
    await publishMinute(M1);
    const lastGood = await keydb.get('2_Mastercard');
    expect(lastGood).not.toBeNull();
    await db.query(`INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (2, 'NaN')`);
    await db.query(`INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (1, 7)`);
    await publishMinute(M1 + MINUTE);

    await keydb.flushdb();
    const result = await publishMinute(M1 + 2 * MINUTE);

    expect(result.unpublishable.map((p) => p.key)).toEqual(['2_Mastercard', '9_Never']);
    expect(await keydb.get('2_Mastercard')).toBe(lastGood);
    expect(await keydb.get('1_Visa')).not.toBeNull();
    // A provider that never had a good value has no key: there is nothing to give it back.
    expect(await keydb.exists('9_Never')).toBe(0);
    expect(await keydb.hget(FENCE_KEY, 'minute')).toBe(String(M1 + 2 * MINUTE));
    // KeyDB and the history agree on every key.
    const held = await keydbBalances(keydb);
    expect((await balancesAt(db, new Date(M1 + 2 * MINUTE + 1_000))).balances).toEqual(held);
  });
});
