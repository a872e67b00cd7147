import { execFileSync, spawn } from 'node:child_process';
import { chownSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort } from './dev-server.js';
import { waitFor } from './harness.js';

export interface PgBouncer {
  /** `DATABASE_URL` for the app: the same database, through PgBouncer. */
  url: string;
  port: number;
  stop(): Promise<void>;
}

/**
 * Debian's `pgbouncer` in transaction pooling mode on a free port, in front of the database `upstream`
 * names, with `poolSize` server connections used round robin (so consecutive transactions of one
 * client land on different server connections, and session state left on one shows). Runs as the
 * postgres user (PgBouncer refuses root); stopped at process exit if the test does not stop it.
 */
export async function startPgBouncer(upstream: string, poolSize = 4): Promise<PgBouncer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(new URL(upstream), poolSize);
    } catch (error) {
      // freePort() closes the port before PgBouncer binds it: another process may take it first.
      if (attempt >= 3 || !String(error).includes('Address already in use')) throw error;
    }
  }
}

async function startOnce(upstream: URL, poolSize: number): Promise<PgBouncer> {
  const dir = mkdtempSync(join(tmpdir(), 'balance-sync-pgbouncer-'));
  const port = await freePort();
  const database = upstream.pathname.slice(1);
  const server = [
    `host=${upstream.hostname}`,
    `port=${upstream.port || 5432}`,
    `dbname=${database}`,
    `user=${decodeURIComponent(upstream.username)}`,
    `password=${decodeURIComponent(upstream.password)}`,
  ].join(' ');
  const ini = join(dir, 'pgbouncer.ini');
  writeFileSync(
    ini,
    `[databases]
${database} = ${server}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = ${port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = ${poolSize}
min_pool_size = ${poolSize}
server_round_robin = 1
max_client_conn = 200
; The app's pools send statement_timeout as a start-up parameter (docs/OPERATIONS.md: PgBouncer).
ignore_startup_parameters = statement_timeout
`,
  );
  const postgresUser = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }));
  const postgresGroup = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }));
  chownSync(dir, postgresUser, postgresGroup);
  chownSync(ini, postgresUser, postgresGroup);
  const logFile = join(dir, 'pgbouncer.log');
  const log = openSync(logFile, 'a');
  const child = spawn('runuser', ['-u', 'postgres', '--', 'pgbouncer', ini], {
    stdio: ['ignore', log, log],
    detached: true,
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const kill = (signal: NodeJS.Signals) => {
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
    try {
      process.kill(-child.pid, signal);
    } catch {
      // Already gone.
    }
  };
  const atExit = () => {
    kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', atExit);
  const stop = async () => {
    process.removeListener('exit', atExit);
    kill('SIGTERM'); // immediate shutdown: server connections close, and with them their sessions
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };

  const url = new URL(upstream);
  url.hostname = '127.0.0.1';
  url.port = String(port);
  try {
    await waitFor(
      'PgBouncer to accept a query',
      async () => {
        if (child.exitCode !== null) throw new Error(`pgbouncer exited: ${readFileSync(logFile, 'utf8')}`);
        const client = new pg.Client({ connectionString: url.toString() });
        try {
          await client.connect();
          await client.query('SELECT 1');
          return true;
        } finally {
          await client.end().catch(() => undefined);
        }
      },
      15_000,
    );
  } catch (error) {
    await stop();
    throw error;
  }
  return { url: url.toString(), port, stop };
}
