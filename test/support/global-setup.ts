import { Connection } from '@temporalio/client';
import { msToTs } from '@temporalio/common/lib/time.js';
import { bundleWorkflowCode } from '@temporalio/worker';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { startDevServer } from './dev-server.js';
import { describeListeners, portOf, sharedListeners } from './shared-services.js';

declare module 'vitest' {
  export interface ProvidedContext {
    temporalAddress: string;
    /** `default` on the dev server; a namespace of this run's own on an external server. */
    temporalNamespace: string;
    temporalCliPath: string;
    workflowBundlePath: string;
    databaseUrl: string;
  }
}

const ADMIN_DATABASE_URL =
  process.env.TEST_ADMIN_DATABASE_URL ?? 'postgres://user:password@127.0.0.1:5432/fxc';

/**
 * An external Temporal (TEST_TEMPORAL_ADDRESS, e.g. what scripts/temporal-cluster.sh prints) instead
 * of a dev server: each project registers a namespace of its own, so the fixed message IDs of the
 * tests (workflow IDs are namespace-wide) never meet a previous run's, and deletes it at the end.
 */
async function externalTemporal(address: string, project: string): Promise<TemporalServer> {
  const namespace = `balance-sync-test-${Date.now().toString(36)}-${project.replace(/\W/g, '-')}`;
  const connection = await Connection.connect({ address });
  try {
    await connection.workflowService.registerNamespace({
      namespace,
      workflowExecutionRetentionPeriod: msToTs('1 day'),
    });
    // Usable once a read in it succeeds (the frontend reads a namespace it has not cached yet).
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        await connection.workflowService.countWorkflowExecutions({ namespace });
        break;
      } catch (error) {
        if (Date.now() > deadline) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  } finally {
    await connection.close();
  }
  return {
    address,
    namespace,
    async stop() {
      const cleanup = await Connection.connect({ address });
      try {
        // Terminates what is left (schedules, runs) and removes its data in the background.
        await cleanup.operatorService.deleteNamespace({ namespace });
      } catch (error) {
        console.warn(`could not delete namespace ${namespace} on ${address}: ${String(error)}`);
      } finally {
        await cleanup.close();
      }
    },
  };
}

interface TemporalServer {
  address: string;
  namespace: string;
  stop(): Promise<void>;
}

/** One Temporal dev server (or TEST_TEMPORAL_ADDRESS's server), one workflow bundle and one fresh database for the whole run. */
export default async function setup(project: TestProject) {
  // The same defaults as test/support/harness.ts (not imported here: it pulls in the app).
  const sharedPorts = [
    portOf(ADMIN_DATABASE_URL, 5432),
    portOf(process.env.TEST_KEYDB_URL ?? 'redis://127.0.0.1:6379', 6379),
    portOf(process.env.TEST_RABBITMQ_URL ?? 'amqp://127.0.0.1:5672', 5672),
  ];
  const sharedBefore = sharedListeners(sharedPorts);
  const cli = execFileSync(
    'bash',
    [fileURLToPath(new URL('../../scripts/ensure-temporal.sh', import.meta.url))],
    {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  ).trim();
  // First the database: a Postgres problem then fails the run before anything is started.
  // Projects run side by side (vitest.config.ts), each with its own database.
  const database = `balance_sync_test_${process.pid}_${project.name.replace(/\W/g, '_')}`;
  const admin = new pg.Client({ connectionString: ADMIN_DATABASE_URL });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${database}`);
  await admin.query(`CREATE DATABASE ${database}`);
  await admin.end();
  const databaseUrl = new URL(ADMIN_DATABASE_URL);
  databaseUrl.pathname = `/${database}`;

  const dropDatabase = async () => {
    const cleanup = new pg.Client({ connectionString: ADMIN_DATABASE_URL });
    await cleanup.connect();
    await cleanup.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
    await cleanup.end();
  };

  const external = process.env.TEST_TEMPORAL_ADDRESS;
  const server: TemporalServer = external
    ? await externalTemporal(external, project.name)
    : { ...(await startDevServer(cli)), namespace: 'default' };
  const dir = mkdtempSync(join(tmpdir(), 'balance-sync-test-'));
  const workflowBundlePath = join(dir, 'workflow-bundle.js');
  try {
    const { code } = await bundleWorkflowCode({
      workflowsPath: fileURLToPath(new URL('../../src/workflows/index.ts', import.meta.url)),
      logger: { trace() {}, debug() {}, info() {}, warn() {}, error: console.error, log() {} },
    });
    writeFileSync(workflowBundlePath, code);
  } catch (error) {
    // Vitest runs no teardown for a setup that failed: stop what this one started.
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
    await dropDatabase();
    throw error;
  }

  project.provide('temporalAddress', server.address);
  project.provide('temporalNamespace', server.namespace);
  project.provide('temporalCliPath', cli);
  project.provide('workflowBundlePath', workflowBundlePath);
  project.provide('databaseUrl', databaseUrl.toString());

  return async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
    await dropDatabase();
    // No test may stop or restart the machine's Postgres, Redis or RabbitMQ: same processes, same sockets.
    const sharedAfter = sharedListeners(sharedPorts);
    if (describeListeners(sharedAfter) !== describeListeners(sharedBefore)) {
      // Vitest logs a teardown error but keeps its exit code: fail the run explicitly.
      process.exitCode = 1;
      throw new Error(
        `a shared service was restarted during the run: before ${describeListeners(sharedBefore)}; after ${describeListeners(sharedAfter)}`,
      );
    }
    console.log(`shared services untouched: ${describeListeners(sharedAfter)}`);
  };
}
