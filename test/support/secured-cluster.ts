import { expect } from 'vitest';
import type { Config } from '../../src/config.js';
import { deleteQueues, testConfig } from './harness.js';
import { isolatedStores, type IsolatedStores } from './isolated-stores.js';
import { startOwnTlsTemporalCluster, type TlsTemporal } from './temporal-cluster.js';

/** A secured cluster of a test file's own (scripts/temporal-cluster.sh), with stores of its own. */
export interface SecuredCluster {
  cluster: TlsTemporal;
  stores: IsolatedStores;
  /** What a client needs besides TEMPORAL_ADDRESS, as the script printed it (its client.env). */
  settings: Record<string, string>;
  /** An app's settings pointed at the cluster and the stores (`overrides` over the file's defaults). */
  newConfig(overrides?: Record<string, string>): Config;
  /** Deletes the queues the configs named, and stops the cluster and the stores. */
  stop(): Promise<void>;
}

export async function startSecuredCluster(
  name: string,
  options: Parameters<typeof startOwnTlsTemporalCluster>[1],
  defaults: Record<string, string> = {},
): Promise<SecuredCluster> {
  const [cluster, stores] = await Promise.all([
    startOwnTlsTemporalCluster(name, options),
    isolatedStores(name),
  ]);
  const { TEMPORAL_ADDRESS, ...settings } = cluster.clientEnv;
  expect(TEMPORAL_ADDRESS).toBe(cluster.address);
  const queues: string[] = [];
  return {
    cluster,
    stores,
    settings,
    newConfig(overrides = {}) {
      const config = testConfig({
        TEMPORAL_ADDRESS: cluster.address,
        TEMPORAL_NAMESPACE: cluster.namespace,
        ...stores.overrides,
        ...defaults,
        ...overrides,
      });
      queues.push(config.INCOMING_QUEUE, config.DEAD_LETTER_QUEUE);
      return config;
    },
    async stop() {
      await deleteQueues(...queues);
      await Promise.all([cluster.stop(), stores.stop()]);
    },
  };
}
