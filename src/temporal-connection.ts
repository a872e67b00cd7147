import { NativeConnection } from '@temporalio/worker';
import { loadClientConfigProfile, toClientOptions } from '@temporalio/envconfig';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import pRetry from 'p-retry';
import type { Logger } from 'pino';
import { ConfigError, type Config } from './config.js';

/** The variables (or TEMPORAL_PROFILE's file) that give the connection's TLS and credentials. */
const TLS_SETTINGS = 'TEMPORAL_TLS_*, TEMPORAL_API_KEY, TEMPORAL_API_KEY_FILE, TEMPORAL_PROFILE';

/**
 * The API key read from a file (a mounted secret that a rotation rewrites) instead of TEMPORAL_API_KEY;
 * the app re-reads it while it runs (watchApiKeyFile).
 */
export const API_KEY_FILE = 'TEMPORAL_API_KEY_FILE';

/** The setting that holds the API key, as messages name it. */
export const apiKeySetting = (env: NodeJS.ProcessEnv = process.env) =>
  env[API_KEY_FILE] ? API_KEY_FILE : 'TEMPORAL_API_KEY';

/** The key in TEMPORAL_API_KEY_FILE, trimmed; throws naming the setting if unreadable or empty. */
export function readApiKeyFile(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw unreadable(path, error);
  }
  return keyIn(path, text);
}

/** readApiKeyFile off the event loop (a file on a network mount may hang). */
const readApiKeyFileAsync = (path: string): Promise<string> =>
  readFile(path, 'utf8').then(
    (text) => keyIn(path, text),
    (error: unknown) => {
      throw unreadable(path, error);
    },
  );

function keyIn(path: string, text: string): string {
  const key = text.trim();
  if (key === '') throw new Error(`${API_KEY_FILE} (${path}) is empty`);
  return key;
}

function unreadable(path: string, error: unknown): Error {
  return new Error(
    `cannot read ${API_KEY_FILE} (${path}): ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
  );
}

/**
 * Temporal's client profile from the environment (`env`, and TEMPORAL_PROFILE's TOML file), with
 * TEMPORAL_API_KEY_FILE's key as its API key when that is set. A second key beside the file (the
 * variable, or the profile's `api_key`) is refused rather than one of them silently winning.
 */
function loadProfile(env: NodeJS.ProcessEnv) {
  const defined = Object.fromEntries(
    Object.entries(env).filter((entry): entry is [string, string] => entry[1] !== undefined),
  );
  const path = env[API_KEY_FILE];
  if (!path) return loadClientConfigProfile({ overrideEnvVars: defined });
  if (env.TEMPORAL_API_KEY) throw new Error(`set TEMPORAL_API_KEY or ${API_KEY_FILE}, not both`);
  // An empty TEMPORAL_API_KEY (compose's `${X:-}`) is no key: leave it out, or envconfig takes it as one.
  const profile = loadClientConfigProfile({
    overrideEnvVars: Object.fromEntries(
      Object.entries(defined).filter(([name]) => name !== 'TEMPORAL_API_KEY'),
    ),
  });
  if (profile.apiKey)
    throw new Error(
      `the profile ${env.TEMPORAL_PROFILE ?? 'default'} (TEMPORAL_PROFILE, in ` +
        `${env.TEMPORAL_CONFIG_FILE ?? 'the default temporal.toml'}) has an api_key and ${API_KEY_FILE} is set: keep one`,
    );
  return { ...profile, apiKey: readApiKeyFile(path) };
}

/**
 * Connection settings from Temporal's standard environment (`TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`,
 * `TEMPORAL_API_KEY`, `TEMPORAL_TLS_*`, `TEMPORAL_PROFILE` with its TOML file), so the same image
 * reaches a dev server, a self-hosted cluster or Temporal Cloud; or the key from TEMPORAL_API_KEY_FILE.
 * An API key turns TLS on and is sent as `Authorization: Bearer …` on every call. Throws ConfigError
 * for settings no connection could use: an unreadable certificate or key file, a client certificate
 * without its key (or the reverse), which envconfig would otherwise drop without a word, or
 * TEMPORAL_API_KEY_FILE beside another API key (TEMPORAL_API_KEY or the profile's `api_key`).
 */
export function temporalConnectOptions(
  config: Pick<Config, 'TEMPORAL_ADDRESS' | 'TEMPORAL_NAMESPACE'>,
  env: NodeJS.ProcessEnv = process.env,
) {
  let options;
  try {
    const profile = loadProfile(env);
    const { clientCert, clientKey } = profile.tls ?? {};
    if (clientCert && !clientKey)
      throw new Error('a client certificate without its key (TEMPORAL_TLS_CLIENT_KEY_PATH)');
    if (clientKey && !clientCert)
      throw new Error('a client key without its certificate (TEMPORAL_TLS_CLIENT_CERT_PATH)');
    options = toClientOptions(profile);
  } catch (error) {
    throw new ConfigError(
      `Invalid configuration: Temporal connection (${TLS_SETTINGS}): ${(error as Error).message}`,
    );
  }
  const { connectionOptions, namespace } = options;
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

/**
 * A certificate the server presented that this client refuses (the Rust core's `InvalidCertificate`):
 * waiting cannot change it, so start-up stops at once, naming the setting to look at.
 */
export function certificateRefusal(message: string): string | undefined {
  const reason = /InvalidCertificate\((\w+)/.exec(message)?.[1];
  if (!reason) return undefined;
  if (reason === 'UnknownIssuer')
    return "the server's TLS certificate is not signed by a CA this client trusts (TEMPORAL_TLS_SERVER_CA_CERT_PATH)";
  if (reason.startsWith('NotValidForName')) {
    const names = [...message.matchAll(/DnsName\(\\?"([^"\\]+)\\?"\)/g)].map((match) => match[1]);
    return (
      `the server's TLS certificate is not valid for the address's host (it names ${names.join(', ') || 'other hosts'}): ` +
      'set TEMPORAL_TLS_SERVER_NAME to one of them'
    );
  }
  return `the server's TLS certificate was refused: ${reason}`;
}

type TlsSettings = { tls?: unknown; apiKey?: unknown };

/** When a JWT (what Temporal Cloud's and a self-hosted server's API keys are) expires; undefined if not one. */
export function apiKeyExpiry(apiKey: string): Date | undefined {
  const [, payload] = apiKey.split('.');
  if (!payload) return undefined;
  try {
    const { exp } = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof exp === 'number' ? new Date(exp * 1000) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The server answered, and refused the caller (gRPC PERMISSION_DENIED or UNAUTHENTICATED, as the Rust
 * core words them): a wrong, expired or revoked API key. Waiting cannot change it: start-up stops at
 * once, naming the setting. Undefined for any other failure.
 */
export function credentialsRefusal(
  message: string,
  settings: TlsSettings,
  now = new Date(),
): string | undefined {
  if (
    !/code: '(The caller does not have permission|The request does not have valid authentication)/.test(
      message,
    )
  )
    return undefined;
  return refusedCredentials(transportReason(message), settings, now);
}

/** A refusal of this client (`why`, the server's words), naming the API key and its expiry if it has one. */
export function refusedCredentials(why: string, { apiKey }: TlsSettings, now = new Date()): string {
  if (typeof apiKey !== 'string') return `the server refused this client's credentials: ${why}`;
  const expiry = apiKeyExpiry(apiKey);
  const expired = expiry && expiry <= now ? `, which expired at ${expiry.toISOString()}` : '';
  return `the server refused the API key (${apiKeySetting()}${expired}): ${why}`;
}

/**
 * What the TLS settings suggest when a connection fails after reaching the server: a server that
 * requires TLS (or a client certificate) closes a connection made without it, and the error says
 * only that the connection closed. Empty when the settings suggest nothing.
 */
export function tlsHint({ tls, apiKey }: TlsSettings): string {
  if (!tls) return 'if the server requires TLS, set TEMPORAL_TLS_SERVER_CA_CERT_PATH (or TEMPORAL_TLS=true)';
  const clientCertificate = typeof tls === 'object' && (tls as { clientCertPair?: unknown }).clientCertPair;
  if (clientCertificate || apiKey) return '';
  return (
    'if the server requires a client certificate (mutual TLS), set TEMPORAL_TLS_CLIENT_CERT_PATH and ' +
    'TEMPORAL_TLS_CLIENT_KEY_PATH'
  );
}

/** Why a connection attempt failed, in one line, and whether another attempt could succeed. */
export function connectFailure(
  message: string,
  settings: TlsSettings,
): { reason: string; permanent: boolean } {
  const refusal = certificateRefusal(message) ?? credentialsRefusal(message, settings);
  if (refusal) return { reason: refusal, permanent: true };
  const reason = transportReason(message);
  // The server was not reached at all: TLS has nothing to do with it.
  if (/^(tcp connect|dns) error/.test(reason)) return { reason, permanent: false };
  const hint = tlsHint(settings);
  return { reason: hint ? `${reason}; ${hint}` : reason, permanent: false };
}

/** gRPC PERMISSION_DENIED and UNAUTHENTICATED: the server answered and refused the caller. */
const REFUSED_CODES = new Set([7, 16]);

/**
 * Whether a call's error (any value, or none) is the server refusing this client: a wrong, expired or
 * revoked API key.
 */
export const isRefusal = (error: unknown) =>
  REFUSED_CODES.has((error as { code?: unknown } | undefined)?.code as number);

/**
 * Why the server refused `namespace` to this client (a valid API key without a permission for it, or
 * no key where the server requires one), if it did; undefined for any other answer, a missing namespace
 * included (the steps after name that).
 */
export async function namespaceRefusal(
  connection: Pick<NativeConnection, 'workflowService'>,
  namespace: string,
  { apiKey }: TlsSettings,
): Promise<string | undefined> {
  try {
    await connection.workflowService.describeNamespace({ namespace });
    return undefined;
  } catch (error) {
    if (!isRefusal(error)) return undefined;
    const why = (error as Error).message;
    return typeof apiKey === 'string'
      ? `the server refused the API key (${apiKeySetting()}) for namespace ${namespace}: ${why}`
      : `the server refused this client for namespace ${namespace}: ${why}; if it requires an API key, set TEMPORAL_API_KEY (or TEMPORAL_API_KEY_FILE)`;
  }
}

/**
 * Connects, retrying with capped backoff while the server is not up yet, for STARTUP_WAIT_SECONDS;
 * a server certificate this client refuses, or a server that refuses this client's API key (at the
 * connection or for the namespace), ends it at once. Rejects with one line naming the cause.
 */
export async function connectToTemporal(
  config: Pick<Config, 'TEMPORAL_ADDRESS' | 'TEMPORAL_NAMESPACE' | 'STARTUP_WAIT_SECONDS'>,
  log: Logger,
): Promise<{ connection: NativeConnection; namespace: string; apiKey: string | undefined }> {
  const { connectionOptions, namespace } = temporalConnectOptions(config);
  const failure = (error: Error) => connectFailure(error.message, connectionOptions);
  let connection: NativeConnection;
  try {
    connection = await pRetry(() => NativeConnection.connect(connectionOptions), {
      retries: Number.POSITIVE_INFINITY,
      minTimeout: 250,
      maxTimeout: 5_000,
      maxRetryTime: config.STARTUP_WAIT_SECONDS * 1000,
      shouldRetry: ({ error }) => !failure(error).permanent,
      onFailedAttempt: ({ error, attemptNumber }) =>
        log.warn(
          { address: connectionOptions.address, attempt: attemptNumber, err: failure(error).reason },
          'cannot reach Temporal yet',
        ),
    });
  } catch (error) {
    throw new Error(
      `cannot connect to Temporal at ${connectionOptions.address}: ${failure(error as Error).reason}`,
    );
  }
  // Before any worker starts: a worker refused its namespace fails with the core's own lines.
  const refusal = await namespaceRefusal(connection, namespace, connectionOptions);
  if (refusal) {
    await connection.close();
    throw new Error(`cannot use Temporal at ${connectionOptions.address}: ${refusal}`);
  }
  const { apiKey } = connectionOptions;
  return { connection, namespace, apiKey: typeof apiKey === 'string' ? apiKey : undefined };
}

/**
 * Re-reads TEMPORAL_API_KEY_FILE every `intervalMs` and gives a changed key to the connection, so a
 * rotated key (a renewed JWT, a new Cloud API key) is used without a restart. A file that cannot be
 * read, or whose read does not answer within `hungAfterMs`, keeps the key in use, and a key the
 * connection does not take is tried again at the next read; each says so in a warn line, once per
 * distinct reason. A key the server refuses shows as the
 * Temporal probe's refusal.
 */
export function watchApiKeyFile(
  connection: Pick<NativeConnection, 'setApiKey'>,
  path: string,
  /** The key the connection was made with. */
  inUse: string | undefined,
  log: Logger,
  intervalMs = 5_000,
  /** How long a read may take before it counts as hung. */
  hungAfterMs = 5_000,
): { stop(): void } {
  let current = inUse;
  let problem: string | undefined;
  const warnOnce = (reason: string, msg: string) => {
    if (reason !== problem) log.warn({ err: reason }, msg);
    problem = reason;
  };
  let readingSince: number | undefined;
  const reload = async () => {
    let key: string;
    try {
      key = await readApiKeyFileAsync(path);
    } catch (error) {
      return warnOnce((error as Error).message, 'cannot reload the Temporal API key; keeping the one in use');
    }
    if (key === current) return void (problem = undefined);
    try {
      await connection.setApiKey(key);
    } catch (error) {
      return warnOnce((error as Error).message, 'cannot use the reloaded Temporal API key');
    }
    current = key;
    problem = undefined;
    log.info(
      { expiresAt: apiKeyExpiry(key)?.toISOString() },
      `Temporal API key reloaded from ${API_KEY_FILE}`,
    );
  };
  const timer = setInterval(() => {
    // One read at a time: a hung file (a network mount) holds one of libuv's few threads, not all.
    if (readingSince !== undefined) {
      if (performance.now() - readingSince >= hungAfterMs)
        warnOnce(
          `reading ${API_KEY_FILE} (${path}) has not answered`,
          'cannot reload the Temporal API key; keeping the one in use',
        );
      return;
    }
    readingSince = performance.now();
    void reload().finally(() => (readingSince = undefined));
  }, intervalMs);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
