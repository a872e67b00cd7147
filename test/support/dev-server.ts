import { Connection } from '@temporalio/client';
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface DevServer {
  address: string;
  port: number;
  process: ChildProcess;
  /** Where the server's own log goes. */
  logFile: string;
  stop(): Promise<void>;
}

/**
 * The SQLite settings compose and the README start a file-backed server with: WAL with
 * synchronous=NORMAL survives a crash of the process (not a power loss) and drains 1.4–3.8× as fast
 * as the default rollback journal (docs/BENCHMARKS.md §1).
 */
export const SQLITE_PRAGMAS = ['journal_mode=WAL', 'synchronous=NORMAL'] as const;

export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export interface DevServerOptions {
  port?: number;
  /** Persist to this SQLite file (with SQLITE_PRAGMAS unless `sqlitePragmas` says otherwise). */
  dbFile?: string;
  sqlitePragmas?: readonly string[];
}

/**
 * Starts `temporal server start-dev` headless on a free port (in memory, or on `dbFile`) and resolves
 * once its frontend answers a health check.
 */
export async function startDevServer(cli: string, options: DevServerOptions = {}): Promise<DevServer> {
  // freePort() closes the port before the server binds it: another process may take one in between
  // (seen once in CI). A bind clash is retried on fresh ports, anything else is not.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(cli, options);
    } catch (error) {
      if (attempt >= 3 || !(error instanceof PortClash)) throw error;
    }
  }
}

class PortClash extends Error {}

async function startOnce(cli: string, options: DevServerOptions): Promise<DevServer> {
  const port = options.port ?? (await freePort());
  const args = [
    'server',
    'start-dev',
    '--headless',
    '--port',
    String(port),
    '--ip',
    '127.0.0.1',
    '--log-level',
    'error',
  ];
  args.push('--http-port', String(await freePort()), '--metrics-port', String(await freePort()));
  if (options.dbFile) {
    args.push('--db-filename', options.dbFile);
    for (const pragma of options.sqlitePragmas ?? SQLITE_PRAGMAS) args.push('--sqlite-pragma', pragma);
  }
  // The server's own error log (noisy while the suite restarts things on purpose) goes to a file.
  const logFile = join(tmpdir(), `balance-sync-temporal-${port}.log`);
  const child = spawn(cli, args, { stdio: ['ignore', 'ignore', openSync(logFile, 'a')] });
  const address = `127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) {
      const message = `temporal dev server exited with ${child.exitCode}; see ${logFile}`;
      throw readFileSync(logFile, 'utf8').includes('address already in use')
        ? new PortClash(`${message} (a port was taken)`)
        : new Error(message);
    }
    try {
      const connection = await Connection.connect({ address, connectTimeout: 1000 });
      await connection.healthService.check({});
      await connection.close();
      break;
    } catch (error) {
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`temporal dev server not healthy on ${address}: ${String(error)}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  return {
    address,
    port,
    process: child,
    logFile,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
