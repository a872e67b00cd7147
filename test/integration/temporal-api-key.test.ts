import amqplib from 'amqplib';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.js';
import { asEnv, plainLines, runCommand, spawnApp, waitUntilReady } from '../support/app-process.js';
import { publisher, RABBITMQ_URL, rows, waitFor } from '../support/harness.js';
import type { IsolatedStores } from '../support/isolated-stores.js';
import { startSecuredCluster, type SecuredCluster } from '../support/secured-cluster.js';
import { clusterSigningKeys, signJwt } from '../support/jwt.js';
import { INTERNODE_ONLY, internodeAnswers, type TlsTemporal } from '../support/temporal-cluster.js';

/** Node's start and the other stores' connections: a start-up refused "at once" exits within this. */
const EXIT_MARGIN_MS = 20_000;

const nowSeconds = () => Math.floor(Date.now() / 1000);

/**
 * A production Temporal that authenticates clients by API key, as Temporal Cloud does: scripts/
 * temporal-cluster.sh with TEMPORAL_CLUSTER_TLS=server (TLS, no client certificate) and
 * TEMPORAL_CLUSTER_AUTH=jwt (the server's default authorizer and claim mapper, checking bearer JWTs
 * against the JWKS of a throw-away key). The app is given only TEMPORAL_API_KEY and the server's CA and
 * name, which the SDK sends as `Authorization: Bearer …`.
 */
describe('a Temporal cluster that requires an API key', () => {
  let secured: SecuredCluster;
  let cluster: TlsTemporal;
  let stores: IsolatedStores;
  /** TEMPORAL_TLS_SERVER_CA_CERT_PATH and _SERVER_NAME, and the printed TEMPORAL_API_KEY. */
  let settings: Record<string, string>;
  let signing: ReturnType<typeof clusterSigningKeys>;

  beforeAll(async () => {
    secured = await startSecuredCluster('apikey', {
      tls: 'server',
      auth: 'jwt',
      env: { TEMPORAL_CLUSTER_JWKS_REFRESH: '2s' },
    });
    ({ cluster, stores, settings } = secured);
    expect(Object.keys(settings).sort()).toEqual([
      'TEMPORAL_API_KEY',
      'TEMPORAL_TLS_SERVER_CA_CERT_PATH',
      'TEMPORAL_TLS_SERVER_NAME',
    ]);
    signing = clusterSigningKeys(cluster.stateDir);
  }, 300_000);

  afterAll(() => secured?.stop(), 120_000);

  const newConfig = (overrides?: Record<string, string>) => secured.newConfig(overrides);

  /** A token for the app's namespace as the cluster's key signs it: `claims` over a valid write one. */
  const apiKey = (claims: Record<string, unknown> = {}, key = signing.key) =>
    signJwt(key, signing.kid, {
      sub: 'balance-sync-test',
      permissions: [`${cluster.namespace}:write`],
      iat: nowSeconds(),
      exp: nowSeconds() + 3600,
      ...claims,
    });

  it('the internal-frontend (admin to any caller) and the other services serve only the internode certificate', async () => {
    const config = readFileSync(join(cluster.stateDir, 'config', 'cluster.yaml'), 'utf8');
    expect(config).toContain('  authorization:\n');
    expect(config).toContain('  internal-frontend:\n');
    const names = ['INTERNAL_FRONTEND_PORT', 'HISTORY_PORT', 'MATCHING_PORT'];
    const answers = await internodeAnswers(cluster, names);
    expect(answers).toEqual(Object.fromEntries(names.map((name) => [name, INTERNODE_ONLY])));
  });

  /** Rows the app recorded with this value (provider 1). */
  const recorded = async (value: number) =>
    (
      await rows(
        stores.db,
        'SELECT count(*)::int AS n FROM historical_transactions WHERE provider_id = 1 AND transaction_value = $1',
        [value],
      )
    )[0]!.n as number;

  /** Publishes one message to the app's queue. */
  const publish = async (config: Config, value: number, messageId: string) => {
    const queue = await publisher(config.INCOMING_QUEUE);
    await queue.publish(JSON.stringify({ id: 1, value }), { messageId });
    await queue.close();
  };

  it('with the printed API key: ingests a message, the schedule command triggers the sync, which writes KeyDB', async () => {
    const config = newConfig();
    const app = await spawnApp(config, settings);
    try {
      await waitUntilReady(app, 90_000);
      await publish(config, 600, 'api-key-1');
      await waitFor('the row', async () => ((await recorded(600)) === 1 ? true : undefined));
      const env = {
        ...asEnv(config),
        ...settings,
      };
      const triggered = await runCommand(process.execPath, ['dist/src/schedules/trigger-schedule.js'], env);
      expect(triggered).toEqual({ status: 0, stdout: `triggered ${config.SYNC_SCHEDULE_ID}\n`, errors: [] });
      // The seed's 1000 + 100 + 200, and the 600 ingested with the API key.
      await waitFor('the sync to write KeyDB', async () =>
        (await stores.keydb.get('1_Visa')) === '1900' ? true : undefined,
      );

      // Revoked while it runs: the JWKS no longer holds the key that signed it (reloaded every 2 s).
      const jwksFile = join(cluster.stateDir, 'jwt', 'jwks', 'jwks.json');
      const jwks = readFileSync(jwksFile, 'utf8');
      try {
        writeFileSync(jwksFile, JSON.stringify({ keys: [] }));
        await app.waitForLine('the refusal logged', (line) =>
          line.includes(
            `"msg":"Temporal refuses this client's credentials (TEMPORAL_API_KEY); holding workflow starts"`,
          ),
        );
        await waitFor('readiness to name the refusal and consuming to pause', async () => {
          const ready = await app.get('/readyz');
          const paused = /^balance_sync_bridge_consumer_paused 1$/m.test((await app.get('/metrics')).body);
          return ready.status === 503 && paused ? JSON.parse(ready.body).reasons : undefined;
        });
        expect(JSON.parse((await app.get('/readyz')).body).reasons).toEqual({
          temporal: "the server refused this client's credentials (TEMPORAL_API_KEY): Request unauthorized.",
        });
        await publish(config, 700, 'api-key-while-revoked');
        // Not taken: it waits on the queue, unacked by anyone.
        expect(await queueDepth(config.INCOMING_QUEUE)).toBe(1);
        expect(await recorded(700)).toBe(0);
      } finally {
        writeFileSync(jwksFile, jwks);
      }
      // Accepted again (in production: a new key, and a restart): the message is recorded, once.
      await waitFor('the held message to be recorded', async () =>
        (await recorded(700)) === 1 ? true : undefined,
      );
      await waitUntilReady(app);
      expect(await recorded(700)).toBe(1);
      expect(await app.kill('SIGTERM')).toBe(0);
    } finally {
      await app.kill('SIGKILL');
    }
  }, 180_000);

  it('TEMPORAL_API_KEY_FILE: a key rotated in the file is used without a restart, once the first no longer verifies', async () => {
    const config = newConfig();
    const dir = mkdtempSync(join(tmpdir(), 'balance-sync-api-key-'));
    const file = join(dir, 'api-key');
    writeFileSync(file, `${apiKey()}\n`);
    // A rotation's new signing key, published beside the cluster's (the server reloads its JWKS every 2 s).
    const jwksFile = join(cluster.stateDir, 'jwt', 'jwks', 'jwks.json');
    const jwks = readFileSync(jwksFile, 'utf8');
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const rotated = {
      ...createPublicKey(privateKey).export({ format: 'jwk' }),
      kid: 'rotated',
      alg: 'RS256',
      use: 'sig',
    };
    const published = (JSON.parse(jwks) as { keys: object[] }).keys;
    writeFileSync(jwksFile, JSON.stringify({ keys: [...published, rotated] }));
    const tls = Object.fromEntries(Object.entries(settings).filter(([name]) => name !== 'TEMPORAL_API_KEY'));
    const env = { ...asEnv(config), ...settings }; // the cluster's own key, for the schedule command
    const app = await spawnApp(config, { ...tls, TEMPORAL_API_KEY_FILE: file });
    try {
      await waitUntilReady(app, 90_000);
      // What a rotation (a secret's new version) leaves in the file: a key signed by the new key.
      const claims = { sub: 'balance-sync-test', permissions: [`${cluster.namespace}:write`] };
      writeFileSync(
        file,
        signJwt(privateKey, 'rotated', { ...claims, iat: nowSeconds(), exp: nowSeconds() + 3600 }),
      );
      await app.waitForLine('the rotated key taken', (line) =>
        line.includes('"msg":"Temporal API key reloaded from TEMPORAL_API_KEY_FILE"'),
      );
      // The first key no longer verifies: a command given it is refused, so only the second works.
      writeFileSync(jwksFile, JSON.stringify({ keys: [rotated] }));
      await waitFor('the server to refuse the first key', async () =>
        (await runCommand(process.execPath, ['dist/src/schedules/describe-schedule.js'], env)).status === 1
          ? true
          : undefined,
      );
      await publish(config, 800, 'api-key-rotated');
      await waitFor('the row, started with the second key', async () =>
        (await recorded(800)) === 1 ? true : undefined,
      );
      expect((await app.get('/readyz')).status).toBe(200);
      expect(app.lines.filter((line) => line.includes("refuses this client's credentials"))).toEqual([]);
      expect(await app.kill('SIGTERM')).toBe(0);
    } finally {
      await app.kill('SIGKILL');
      writeFileSync(jwksFile, jwks);
      rmSync(dir, { recursive: true, force: true });
    }
    // The cluster's own key accepted again before the next test.
    await waitFor('the first key accepted again', async () =>
      (await runCommand(process.execPath, ['dist/src/schedules/describe-schedule.js'], env)).status === 0
        ? true
        : undefined,
    );
  }, 180_000);

  /**
   * Publishes a message, starts the app with `key` (none if undefined), expects it to exit 1 well
   * inside the 60 s it would wait for a server that is not up, and the message still on the queue:
   * nothing was consumed. Returns what it printed besides its JSON log.
   */
  async function refusedStart(key: string | undefined) {
    const config = newConfig({ STARTUP_WAIT_SECONDS: '60' });
    await publish(config, 5, 'refused-1');
    const tls = Object.fromEntries(Object.entries(settings).filter(([name]) => name !== 'TEMPORAL_API_KEY'));
    const started = Date.now();
    const app = await spawnApp(config, key === undefined ? tls : { ...tls, TEMPORAL_API_KEY: key });
    try {
      expect(await app.exited).toBe(1);
      expect(Date.now() - started).toBeLessThan(EXIT_MARGIN_MS);
      expect(await queueDepth(config.INCOMING_QUEUE)).toBe(1);
      return plainLines(app);
    } finally {
      await app.kill('SIGKILL');
    }
  }

  const failedToStart = (how: string) =>
    `balance-sync failed to start: ${how} Temporal at ${cluster.address}: `;

  it('a key the cluster did not sign: start-up fails at once with one line naming TEMPORAL_API_KEY; nothing is consumed', async () => {
    expect(await refusedStart(apiKey({}, signing.foreign))).toEqual([
      `${failedToStart('cannot connect to')}the server refused the API key (TEMPORAL_API_KEY): Request unauthorized.`,
    ]);
  }, 60_000);

  it('a schedule command with a key the cluster did not sign prints one line naming TEMPORAL_API_KEY and exits 1', async () => {
    const env = {
      ...asEnv(newConfig()),
      ...settings,
      TEMPORAL_API_KEY: apiKey({}, signing.foreign),
    };
    const result = await runCommand(process.execPath, ['dist/src/schedules/describe-schedule.js'], env);
    expect(result).toEqual({
      status: 1,
      stdout: '',
      errors: [
        `schedule:describe: cannot reach Temporal at ${cluster.address}: the server refused the API key ` +
          '(TEMPORAL_API_KEY): Request unauthorized.',
      ],
    });
  }, 60_000);

  it('an expired key: start-up fails at once with one line saying when it expired; nothing is consumed', async () => {
    const exp = nowSeconds() - 60;
    expect(await refusedStart(apiKey({ exp }))).toEqual([
      `${failedToStart('cannot connect to')}the server refused the API key (TEMPORAL_API_KEY, which expired at ` +
        `${new Date(exp * 1000).toISOString()}): Request unauthorized.`,
    ]);
  }, 60_000);

  it('a key without a permission for the namespace: start-up fails at once with one line; nothing is consumed', async () => {
    expect(await refusedStart(apiKey({ permissions: ['other:write'] }))).toEqual([
      `${failedToStart('cannot use')}the server refused the API key (TEMPORAL_API_KEY) for namespace ` +
        `${cluster.namespace}: Request unauthorized.`,
    ]);
  }, 60_000);

  it('no key: start-up fails at once with one line naming TEMPORAL_API_KEY; nothing is consumed', async () => {
    expect(await refusedStart(undefined)).toEqual([
      `${failedToStart('cannot use')}the server refused this client for namespace ${cluster.namespace}: ` +
        'Request unauthorized.; if it requires an API key, set TEMPORAL_API_KEY (or TEMPORAL_API_KEY_FILE)',
    ]);
  }, 60_000);
});

/** Messages ready on a queue of the shared broker. */
async function queueDepth(queue: string): Promise<number> {
  const connection = await amqplib.connect(RABBITMQ_URL);
  try {
    return (await (await connection.createChannel()).checkQueue(queue)).messageCount;
  } finally {
    await connection.close();
  }
}
