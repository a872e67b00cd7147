import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.js';
import { FENCE_KEY } from '../../src/keydb/fenced-write.js';
import { spawnApp, waitUntilReady, type AppProcess } from '../support/app-process.js';
import { deleteQueues, temporalClient, testConfig, waitFor } from '../support/harness.js';
import { isolatedStores, type IsolatedStores } from '../support/isolated-stores.js';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js';

const MINUTE = 60_000;
/** How long instance A's bytes to KeyDB are held: from 2 s before a minute to past the next one. */
const HOLD_MS = 70_000;

type Sample = { at: number; visa: number; minute: number };

/**
 * Two instances on one KeyDB; A reaches it through a proxy that holds its bytes (sockets open) from
 * 2 s before minute M for 70 s. A's write for M waits in the proxy while B writes M+1 with a larger
 * balance; when the proxy lets go, KeyDB gets A's write for M after B's for M+1. Balances only grow
 * here, so a reader polling every 10 ms must never see one go down.
 */
describe('the KeyDB fence, two instances', () => {
  let stores: IsolatedStores;
  let proxy: TcpProxy;
  let config: Config;
  const apps: AppProcess[] = [];

  beforeAll(async () => {
    stores = await isolatedStores('balance_sync_fence');
    proxy = await startTcpProxy(Number(new URL(stores.overrides.KEYDB_URL).port));
    config = testConfig(stores.overrides);
  });

  afterAll(async () => {
    await Promise.all(apps.map((app) => app.kill('SIGKILL')));
    proxy?.thaw('resume');
    const client = await temporalClient();
    for (const id of [config.SYNC_SCHEDULE_ID, config.RECONCILE_SCHEDULE_ID]) {
      await client.schedule
        .getHandle(id)
        .delete()
        .catch(() => undefined);
    }
    await client.connection.close();
    await deleteQueues(config.INCOMING_QUEUE, config.DEAD_LETTER_QUEUE).catch(() => undefined);
    await proxy?.close();
    await stores?.stop();
  });

  it(
    "never lets KeyDB go back to an older minute: A's write for M, held past B's for M+1, is refused",
    async () => {
      const a = await spawnApp({ ...config, KEYDB_URL: `redis://127.0.0.1:${proxy.port}/0` });
      apps.push(a);
      await waitUntilReady(a);
      // M: a minute whose tick (5 s before it) A's schedule still has ahead, with time to warm up.
      const m = Math.ceil((Date.now() + 8_000) / MINUTE) * MINUTE;

      const samples: Sample[] = [];
      let polling = true;
      const poller = (async () => {
        const reader = stores.keydb.duplicate();
        while (polling) {
          const replies = await reader.multi().get('1_Visa').hget(FENCE_KEY, 'minute').exec();
          const [visa, minute] = (replies ?? []).map(([, value]) => value as string | null);
          samples.push({ at: Date.now(), visa: Number(visa ?? 0), minute: Number(minute ?? 0) });
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
        reader.disconnect();
      })();

      // A has warmed up for M (at its tick) when its connections freeze; its write at M is held.
      await new Promise((resolve) => setTimeout(resolve, m - 2_000 - Date.now()));
      const frozenAt = Date.now();
      expect(proxy.freeze()).toBeGreaterThan(0);
      const b = await spawnApp(config);
      apps.push(b);
      await waitUntilReady(b);
      // After A read M's balances: M+1's are larger.
      await stores.db.query(
        'INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (1, 100)',
      );
      await waitFor(
        'B to write M+1',
        () => Promise.resolve(samples.some((s) => s.minute >= m + MINUTE) ? true : undefined),
        2 * MINUTE,
      );
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, frozenAt + HOLD_MS - Date.now())));
      proxy.thaw('resume');
      const thawedAt = Date.now();

      // Three seconds of reads after A's held bytes reach KeyDB (over loopback, in milliseconds).
      await waitFor('three seconds of reads after the thaw', () =>
        Promise.resolve(samples.some((s) => s.at > thawedAt + 3_000) ? true : undefined),
      );
      polling = false;
      await poller;

      const backwards = samples.filter(
        (s, i) => i > 0 && (s.visa < samples[i - 1]!.visa || s.minute < samples[i - 1]!.minute),
      );
      expect(backwards).toEqual([]);
      expect(samples.filter((s) => s.at >= thawedAt).length).toBeGreaterThan(50);
      expect(samples.at(-1)).toMatchObject({ visa: 1400 });

      const refusedStale = async () =>
        Number(
          /^balance_sync_keydb_writes_refused_total\{reason="stale"\} (\d+)/m.exec(
            (await a.get('/metrics')).body,
          )?.[1],
        );
      await waitFor('A to count its held write refused', async () =>
        (await refusedStale()) >= 1 ? true : undefined,
      );
      const warned = a.lines.find((line) => line.includes('KeyDB refused a stale write'));
      expect(warned).toBeDefined();
      const warning = JSON.parse(warned!) as { minute: string; newerMinute: string; givenUp: boolean };
      expect(warning).toMatchObject({ minute: new Date(m).toISOString(), givenUp: true });
      expect(Date.parse(warning.newerMinute)).toBeGreaterThanOrEqual(m + MINUTE);
    },
    5 * MINUTE,
  );
});
