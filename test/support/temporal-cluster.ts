import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http2, { type SecureClientSessionOptions } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect } from 'vitest';

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

/** A cluster whose frontend serves TLS (TEMPORAL_CLUSTER_TLS=mtls or server), internode TLS on. */
export interface TlsTemporal extends RestartableTemporal {
  /** What the script prints for a client: TEMPORAL_ADDRESS, the TEMPORAL_TLS_* settings, TEMPORAL_API_KEY. */
  clientEnv: Record<string, string>;
  /** The script's TEMPORAL_CLUSTER_DIR: config/cluster.yaml, tls/ (certificates), jwt/ (signing key). */
  stateDir: string;
  /** The ports the script gave each service (ports.env): FRONTEND_PORT, HISTORY_PORT, MATCHING_PORT, … */
  ports: Record<string, number>;
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
    TEMPORAL_CLUSTER_AUTH: '',
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

/** `NAME=value` lines. */
const envFile = (path: string) =>
  Object.fromEntries(
    readFileSync(path, 'utf8')
      .trim()
      .split('\n')
      .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
  );

/**
 * A cluster of this process's own whose frontend serves TLS: `mtls` requires a client certificate,
 * `server` does not; `auth: 'jwt'` has the frontend check API keys (bearer JWTs). The script makes
 * throw-away CAs, certificates and signing key in a directory of the cluster's own, removed by `stop`.
 */
export async function startOwnTlsTemporalCluster(
  name: string,
  { tls, auth = '', env = {} }: { tls: 'mtls' | 'server'; auth?: '' | 'jwt'; env?: Record<string, string> },
): Promise<TlsTemporal> {
  const dir = mkdtempSync(join(tmpdir(), `balance-sync-${name}-`));
  try {
    const cluster = await startOwnTemporalCluster(name, {
      TEMPORAL_CLUSTER_TLS: tls,
      TEMPORAL_CLUSTER_AUTH: auth,
      TEMPORAL_CLUSTER_DIR: dir,
      ...env,
    });
    const ports = Object.fromEntries(
      Object.entries(envFile(join(dir, 'ports.env'))).map(([key, value]) => [key, Number(value)]),
    );
    return {
      ...cluster,
      clientEnv: envFile(join(dir, 'tls', 'client.env')),
      stateDir: dir,
      ports,
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

/**
 * A gRPC health check (`grpc.health.v1.Health/Check`, over node:http2) on 127.0.0.1:`port`, in plain
 * text or with `tls`: `SERVING` (or `status <n>`) when the server answers, else `refused: <why>`
 * (the TLS alert's code, or how the connection ended).
 */
export function grpcHealthCheck(port: number, tls?: SecureClientSessionOptions): Promise<string> {
  return new Promise((resolve) => {
    const session = http2.connect(`${tls ? 'https' : 'http'}://127.0.0.1:${port}`, tls ?? {});
    const done = (answer: string) => {
      session.destroy();
      resolve(answer);
    };
    const refused = (error: Error) =>
      done(`refused: ${(error as NodeJS.ErrnoException).code ?? error.message}`);
    session.on('error', refused);
    session.setTimeout(10_000, () => done('refused: no answer within 10 s'));
    const request = session.request({
      ':method': 'POST',
      ':path': '/grpc.health.v1.Health/Check',
      'content-type': 'application/grpc',
      te: 'trailers',
    });
    const body: Buffer[] = [];
    request.on('data', (chunk: Buffer) => body.push(chunk));
    request.on('error', refused);
    request.on('close', () => {
      // A length-prefixed HealthCheckResponse: 5 bytes of frame, then field 1 (status) as a varint.
      const answer = Buffer.concat(body);
      if (answer.length < 7 || answer[5] !== 0x08) return done('refused: closed without an answer');
      done(answer[6] === 1 ? 'SERVING' : `status ${answer[6]}`);
    });
    // An empty HealthCheckRequest (the server as a whole), uncompressed.
    request.end(Buffer.alloc(5));
  });
}

/**
 * What each of four attempts gets from the services' own gRPC ports (`portNames` of ports.env): plain
 * text, TLS without a certificate, with the app's client certificate (the frontend's CA), and with the
 * internode certificate; by port name. INTERNODE_ONLY is the answer of a port that serves mutual TLS
 * with the internode CA alone.
 */
export const INTERNODE_ONLY = {
  plainText: expect.stringMatching(/^refused: /),
  noCertificate: 'refused: ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED',
  clientCertificate: 'refused: ERR_SSL_TLSV1_ALERT_UNKNOWN_CA',
  internodeCertificate: 'SERVING',
};

export async function internodeAnswers(cluster: TlsTemporal, portNames: string[]) {
  const file = (name: string) => readFileSync(join(cluster.stateDir, 'tls', name));
  const tls = { ca: file('internode-ca.pem'), servername: 'internode.temporal-cluster.test' };
  const attempts = {
    plainText: undefined,
    noCertificate: tls,
    clientCertificate: { ...tls, cert: file('client.pem'), key: file('client.key') },
    internodeCertificate: { ...tls, cert: file('internode.pem'), key: file('internode.key') },
  };
  const answers: Record<string, Record<string, string>> = {};
  for (const name of portNames) {
    answers[name] = {};
    for (const [attempt, options] of Object.entries(attempts))
      answers[name][attempt] = await grpcHealthCheck(cluster.ports[name]!, options);
  }
  return answers;
}
