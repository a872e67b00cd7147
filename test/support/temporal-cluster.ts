import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const SCRIPT = fileURLToPath(new URL('../../scripts/temporal-cluster.sh', import.meta.url));

/** A Temporal server a test restarts: the dev server on a file, or a cluster of the test's own. */
export interface RestartableTemporal {
  address: string;
  /** The namespace the app uses on it. */
  namespace: string;
  /** Stops it and starts it again on the same address, with its data. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/** A cluster whose frontend requires mutual TLS (TEMPORAL_CLUSTER_TLS=mtls). */
export interface MtlsTemporal extends RestartableTemporal {
  /** What the script prints for a client: TEMPORAL_ADDRESS and the TEMPORAL_TLS_* settings. */
  clientEnv: Record<string, string>;
}

/**
 * A Temporal cluster of this process's own (scripts/temporal-cluster.sh: the server on PostgreSQL
 * persistence and SQL visibility), on databases of its own, so restarting it disturbs no other test
 * and no developer's cluster; `stop` drops them. Namespace `default`, registered by the script.
 */
export async function startOwnTemporalCluster(
  name: string,
  extraEnv: Record<string, string> = {},
): Promise<RestartableTemporal> {
  const env = {
    ...process.env,
    TEMPORAL_CLUSTER_DB: `balance_sync_${name}_${process.pid}_temporal`,
    TEMPORAL_CLUSTER_VISIBILITY_DB: `balance_sync_${name}_${process.pid}_temporal_visibility`,
    TEMPORAL_CLUSTER_DIR: '',
    TEMPORAL_CLUSTER_PORT: '',
    TEMPORAL_CLUSTER_TLS: '',
    // Beside the run's main cluster on the same Postgres (max_connections 100 by default).
    TEMPORAL_CLUSTER_MAX_CONNS: '4',
    ...extraEnv,
  };
  // Async: the suite's publisher and progress monitor keep running while the cluster restarts.
  const script = async (command: string, extraEnv: Record<string, string> = {}) =>
    (await promisify(execFile)('bash', [SCRIPT, command], { env: { ...env, ...extraEnv } })).stdout.trim();
  let address: string;
  try {
    address = await script('start');
  } catch (error) {
    await script('destroy').catch(() => undefined);
    throw error;
  }
  const cluster: RestartableTemporal = {
    address,
    namespace: 'default',
    async restart() {
      await script('stop');
      // The same port, or a clear failure: the app keeps the address it was given.
      await script('start', { TEMPORAL_CLUSTER_PORT: address.split(':').at(-1)! });
    },
    async stop() {
      await script('destroy');
    },
  };
  return cluster;
}

/**
 * A cluster of this process's own whose frontend requires a client certificate: the script makes a
 * throw-away CA and certificates in a directory of the cluster's own, removed by `stop`.
 */
export async function startOwnMtlsTemporalCluster(name: string): Promise<MtlsTemporal> {
  const dir = mkdtempSync(join(tmpdir(), `balance-sync-${name}-`));
  try {
    const cluster = await startOwnTemporalCluster(name, {
      TEMPORAL_CLUSTER_TLS: 'mtls',
      TEMPORAL_CLUSTER_DIR: dir,
    });
    const clientEnv = Object.fromEntries(
      readFileSync(join(dir, 'tls', 'client.env'), 'utf8')
        .trim()
        .split('\n')
        .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
    );
    return {
      ...cluster,
      clientEnv,
      async stop() {
        await cluster.stop();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}
