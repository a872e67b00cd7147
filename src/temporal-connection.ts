import { NativeConnection } from '@temporalio/worker';
import { loadClientConnectConfig } from '@temporalio/envconfig';
import pRetry from 'p-retry';
import type { Logger } from 'pino';
import type { Config } from './config.js';

/**
 * Connection settings from Temporal's standard environment (`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`,
 * `TEMPORAL_API_KEY`, `TEMPORAL_TLS_*`, `TEMPORAL_PROFILE` with its TOML file), so the same image
 * reaches a dev server, a self-hosted cluster or Temporal Cloud.
 */
export function temporalConnectOptions(config: Pick<Config, 'TEMPORAL_ADDRESS' | 'TEMPORAL_NAMESPACE'>) {
  const { connectionOptions, namespace } = loadClientConnectConfig();
  return {
    connectionOptions: {
      ...connectionOptions,
      address: connectionOptions.address ?? config.TEMPORAL_ADDRESS,
    },
    namespace: namespace ?? config.TEMPORAL_NAMESPACE,
  };
}

/**
 * The readable part of a Rust transport error: `tonic::transport::Error(Transport, ConnectError(
 * ConnectError("tcp connect error", 127.0.0.1:7233, Os { … message: "Connection refused" })))`
 * becomes `tcp connect error: Connection refused`.
 */
export function transportReason(message: string): string {
  const what = /ConnectError\("([^"]+)"/.exec(message)?.[1];
  const why = /(?:message|error): "([^"]+)"/.exec(message)?.[1];
  if (what || why) return [what, why].filter(Boolean).join(': ');
  return message.length > 120 ? `${message.slice(0, 117)}...` : message;
}

/** Connects, retrying with capped backoff while the server is not up yet. */
export async function connectToTemporal(
  config: Pick<Config, 'TEMPORAL_ADDRESS' | 'TEMPORAL_NAMESPACE' | 'STARTUP_WAIT_SECONDS'>,
  log: Logger,
): Promise<{ connection: NativeConnection; namespace: string }> {
  const { connectionOptions, namespace } = temporalConnectOptions(config);
  const connection = await pRetry(() => NativeConnection.connect(connectionOptions), {
    retries: Number.POSITIVE_INFINITY,
    minTimeout: 250,
    maxTimeout: 5_000,
    maxRetryTime: config.STARTUP_WAIT_SECONDS * 1000,
    onFailedAttempt: ({ error, attemptNumber }) =>
      log.warn(
        { address: connectionOptions.address, attempt: attemptNumber, err: transportReason(error.message) },
        'cannot reach Temporal yet',
      ),
  });
  return { connection, namespace };
}
