import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.js';
import { plainLines, spawnApp, waitUntilReady } from '../support/app-process.js';
import { publisher, rows, waitFor } from '../support/harness.js';
import type { IsolatedStores } from '../support/isolated-stores.js';
import { startSecuredCluster, type SecuredCluster } from '../support/secured-cluster.js';
import type { TlsTemporal } from '../support/temporal-cluster.js';

/** Node's start and the other stores' connections: a start-up refused "at once" exits within this. */
const EXIT_MARGIN_MS = 20_000;

/**
 * A cluster that wants both a client certificate and an API key (scripts/temporal-cluster.sh with
 * TEMPORAL_CLUSTER_TLS=mtls and TEMPORAL_CLUSTER_AUTH=jwt), as a self-hosted production cluster with
 * mutual TLS and an authorizer does: the app sends both from the standard variables.
 */
describe('a Temporal cluster that requires mutual TLS and an API key', () => {
  let secured: SecuredCluster;
  let cluster: TlsTemporal;
  let stores: IsolatedStores;
  /** The client certificate and key, the server's CA and name, and the printed TEMPORAL_API_KEY. */
  let settings: Record<string, string>;

  beforeAll(async () => {
    secured = await startSecuredCluster('mtlsjwt', { tls: 'mtls', auth: 'jwt' });
    ({ cluster, stores, settings } = secured);
    expect(Object.keys(settings).sort()).toEqual([
      'TEMPORAL_API_KEY',
      'TEMPORAL_TLS_CLIENT_CERT_PATH',
      'TEMPORAL_TLS_CLIENT_KEY_PATH',
      'TEMPORAL_TLS_SERVER_CA_CERT_PATH',
      'TEMPORAL_TLS_SERVER_NAME',
    ]);
  }, 300_000);

  afterAll(() => secured?.stop(), 120_000);

  const newConfig = (overrides?: Record<string, string>) => secured.newConfig(overrides);

  const publish = async (config: Config, value: number) => {
    const queue = await publisher(config.INCOMING_QUEUE);
    await queue.publish(JSON.stringify({ id: 1, value }), { messageId: `mtls-jwt-${value}` });
    await queue.close();
  };

  it('with the certificate and the key: ingests a message', async () => {
    const config = newConfig();
    const app = await spawnApp(config, settings);
    try {
      await waitUntilReady(app, 90_000);
      await publish(config, 650);
      await waitFor('the row', async () => {
        const [row] = await rows(
          stores.db,
          'SELECT count(*)::int AS n FROM historical_transactions WHERE provider_id = 1 AND transaction_value = 650',
        );
        return row!.n === 1 ? true : undefined;
      });
      expect(await app.kill('SIGTERM')).toBe(0);
    } finally {
      await app.kill('SIGKILL');
    }
  }, 120_000);

  it('with the certificate and no key: start-up fails at once with one line naming TEMPORAL_API_KEY', async () => {
    const config = newConfig({ STARTUP_WAIT_SECONDS: '60' });
    const certificateOnly = Object.fromEntries(
      Object.entries(settings).filter(([name]) => name !== 'TEMPORAL_API_KEY'),
    );
    const started = Date.now();
    const app = await spawnApp(config, certificateOnly);
    try {
      expect(await app.exited).toBe(1);
      expect(Date.now() - started).toBeLessThan(EXIT_MARGIN_MS);
      expect(plainLines(app)).toEqual([
        `balance-sync failed to start: cannot use Temporal at ${cluster.address}: the server refused this ` +
          `client for namespace ${cluster.namespace}: Request unauthorized.; if it requires an API key, set ` +
          'TEMPORAL_API_KEY (or TEMPORAL_API_KEY_FILE)',
      ]);
    } finally {
      await app.kill('SIGKILL');
    }
  }, 60_000);
});
