import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { asEnv, plainLines, runCommand, spawnApp, waitUntilReady } from '../support/app-process.js';
import { publisher, rows, waitFor } from '../support/harness.js';
import type { IsolatedStores } from '../support/isolated-stores.js';
import { startSecuredCluster, type SecuredCluster } from '../support/secured-cluster.js';
import { INTERNODE_ONLY, internodeAnswers, type TlsTemporal } from '../support/temporal-cluster.js';

/** How long a start-up that cannot connect to Temporal retries before it gives up (the app's setting). */
const STARTUP_WAIT_SECONDS = 5;
/** Node's start, the other stores' connections and the last attempt, beyond STARTUP_WAIT_SECONDS. */
const EXIT_MARGIN_MS = 20_000;

/** Runs a schedule command (`node dist/src/schedules/<file>.js`) with only `env`, PATH and HOME. */
const scheduleCommand = (file: string, env: Record<string, string>) =>
  runCommand(process.execPath, [`dist/src/schedules/${file}.js`], env);

/**
 * A production Temporal that authenticates clients by certificate (scripts/temporal-cluster.sh with
 * TEMPORAL_CLUSTER_TLS=mtls: the server on PostgreSQL, its frontend requiring a certificate from a
 * throw-away CA), reached as a user reaches a secured cluster: only the standard TEMPORAL_TLS_*
 * variables, read by @temporalio/envconfig, by the app and by its schedule commands alike. Its services
 * reach each other over mutual TLS too, with a CA of their own.
 */
describe('a Temporal cluster that requires mutual TLS', () => {
  let secured: SecuredCluster;
  let cluster: TlsTemporal;
  let stores: IsolatedStores;
  /** TEMPORAL_TLS_CLIENT_CERT_PATH, _CLIENT_KEY_PATH, _SERVER_CA_CERT_PATH and _SERVER_NAME. */
  let tls: Record<string, string>;

  beforeAll(async () => {
    secured = await startSecuredCluster(
      'tls',
      { tls: 'mtls' },
      { STARTUP_WAIT_SECONDS: String(STARTUP_WAIT_SECONDS) },
    );
    ({ cluster, stores, settings: tls } = secured);
  }, 300_000);

  afterAll(() => secured?.stop(), 120_000);

  /** The TLS settings less the client's certificate and key: the server's CA and name only. */
  const withoutClientCertificate = () =>
    Object.fromEntries(Object.entries(tls).filter(([name]) => !name.startsWith('TEMPORAL_TLS_CLIENT_')));

  const newConfig = (overrides?: Record<string, string>) => secured.newConfig(overrides);

  it('the services serve each other only mutual TLS from the internode CA: plain text, no certificate and the client certificate are refused', async () => {
    const config = readFileSync(join(cluster.stateDir, 'config', 'cluster.yaml'), 'utf8');
    expect(config).toContain('    internode:\n      server:\n');
    const names = ['HISTORY_PORT', 'MATCHING_PORT'];
    const answers = await internodeAnswers(cluster, names);
    expect(answers).toEqual(Object.fromEntries(names.map((name) => [name, INTERNODE_ONLY])));
  });

  it('ingests a message and a triggered sync writes KeyDB; the schedule commands work with the same settings', async () => {
    const config = newConfig();
    const app = await spawnApp(config, tls);
    try {
      await waitUntilReady(app, 90_000);
      const queue = await publisher(config.INCOMING_QUEUE);
      await queue.publish(JSON.stringify({ id: 1, value: 600 }), { messageId: 'tls-1' });
      await queue.close();
      await waitFor('the row', async () => {
        const [row] = await rows(
          stores.db,
          'SELECT count(*)::int AS n FROM historical_transactions WHERE provider_id = 1 AND transaction_value = 600',
        );
        return row!.n === 1 ? true : undefined;
      });

      const env = { ...asEnv(config), ...tls };
      const triggered = await scheduleCommand('trigger-schedule', env);
      expect(triggered).toEqual({ status: 0, stdout: `triggered ${config.SYNC_SCHEDULE_ID}\n`, errors: [] });
      // The seed's 1000 + 100 + 200, and the 600 ingested over TLS.
      await waitFor('the sync to write KeyDB', async () =>
        (await stores.keydb.get('1_Visa')) === '1900' ? true : undefined,
      );

      const described = await scheduleCommand('describe-schedule', env);
      expect(described.errors).toEqual([]);
      expect(described.status).toBe(0);
      const schedule = JSON.parse(described.stdout);
      expect(schedule.scheduleId).toBe(config.SYNC_SCHEDULE_ID);
      expect(schedule.recentActions.length).toBeGreaterThanOrEqual(1);
      expect(await app.kill('SIGTERM')).toBe(0);
    } finally {
      await app.kill('SIGKILL');
    }
  }, 180_000);

  /** Starts the app with `tlsSettings`, expects it to give up within its STARTUP_WAIT_SECONDS: its one line. */
  async function failedStart(tlsSettings: Record<string, string>) {
    const started = Date.now();
    const app = await spawnApp(newConfig(), tlsSettings);
    try {
      expect(await app.exited).toBe(1);
      expect(Date.now() - started).toBeLessThan(STARTUP_WAIT_SECONDS * 1000 + EXIT_MARGIN_MS);
      expect(app.lines.some((line) => line.includes('"msg":"cannot reach Temporal yet"'))).toBe(true);
      const lines = plainLines(app);
      expect(lines).toHaveLength(1);
      return lines[0]!;
    } finally {
      await app.kill('SIGKILL');
    }
  }

  it('without the client certificate, start-up fails within STARTUP_WAIT_SECONDS with one line naming it', async () => {
    expect(await failedStart(withoutClientCertificate())).toMatch(
      new RegExp(
        `^balance-sync failed to start: cannot connect to Temporal at ${cluster.address}: .*` +
          'if the server requires a client certificate \\(mutual TLS\\), set TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH$',
      ),
    );
  }, 60_000);

  it('without any TLS setting, start-up fails within STARTUP_WAIT_SECONDS with one line saying TLS may be required', async () => {
    expect(await failedStart({})).toMatch(
      new RegExp(
        `^balance-sync failed to start: cannot connect to Temporal at ${cluster.address}: .*` +
          'if the server requires TLS, set TEMPORAL_TLS_SERVER_CA_CERT_PATH',
      ),
    );
  }, 60_000);

  it('without the server name the certificate is for, start-up fails at once naming TEMPORAL_TLS_SERVER_NAME', async () => {
    const { TEMPORAL_TLS_SERVER_NAME: name, ...rest } = tls;
    const started = Date.now();
    const app = await spawnApp(newConfig({ STARTUP_WAIT_SECONDS: '60' }), rest);
    try {
      expect(await app.exited).toBe(1);
      // At once: well inside the 60 s it would otherwise retry for.
      expect(Date.now() - started).toBeLessThan(EXIT_MARGIN_MS);
      expect(plainLines(app)).toEqual([
        `balance-sync failed to start: cannot connect to Temporal at ${cluster.address}: the server's TLS ` +
          `certificate is not valid for the address's host (it names ${name}, localhost): set TEMPORAL_TLS_SERVER_NAME to one of them`,
      ]);
    } finally {
      await app.kill('SIGKILL');
    }
  }, 60_000);

  it('a schedule command without the client certificate prints one line naming it and exits 1', async () => {
    const result = await scheduleCommand('describe-schedule', {
      ...asEnv(newConfig()),
      ...withoutClientCertificate(),
    });
    expect(result.status).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.errors).toEqual([
      expect.stringMatching(
        new RegExp(
          `^schedule:describe: cannot reach Temporal at ${cluster.address}: .*; if the server requires a client ` +
            'certificate \\(mutual TLS\\), set TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH$',
        ),
      ),
    ]);
  }, 60_000);
});
