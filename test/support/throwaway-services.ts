import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './dev-server.js';
import { waitFor } from './harness.js';

/**
 * Throw-away Postgres, Redis and RabbitMQ servers on free ports, in a temp dir, for the tests that
 * stop and restart services (test/faults). The machine's own services are never touched.
 * Each `stop()` is idempotent and also runs at process exit, so nothing outlives a failed run.
 */
export interface ThrowawayService {
  url: string;
  port: number;
  /** Stops and starts the service again on the same port and data. */
  restart(): Promise<void>;
  /** Stops it, keeping the data dir (for a fault that lasts a while). */
  halt(): Promise<void>;
  start(): Promise<void>;
  /** Stops it for good and removes its data. */
  stop(): Promise<void>;
}

const execFileAsync = promisify(execFile);
/** Runs a command to completion without blocking the event loop (the suite keeps publishing). */
const run = async (file: string, args: string[], env?: NodeJS.ProcessEnv) =>
  (await execFileAsync(file, args, { encoding: 'utf8', timeout: 120_000, env })).stdout;
/** For exit handlers only, where nothing asynchronous runs any more. */
const runSync = (file: string, args: string[]) =>
  execFileSync(file, args, { stdio: 'ignore', timeout: 60_000 });

const cleanups = new Set<() => void>();
process.once('exit', () => {
  for (const cleanup of cleanups) {
    try {
      cleanup();
    } catch {
      // Best effort at exit.
    }
  }
});

function baseDir(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `balance-sync-${name}-`));
  chmodSync(dir, 0o755);
  return dir;
}

/** initdb + pg_ctl as the postgres user (initdb refuses root), trust auth on 127.0.0.1 only. */
export async function startThrowawayPostgres(): Promise<ThrowawayService> {
  const bin = (await run('bash', ['-c', 'ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1'])).trim();
  const dir = baseDir('pg');
  const data = join(dir, 'data');
  const user = Number(await run('id', ['-u', 'postgres']));
  const group = Number(await run('id', ['-g', 'postgres']));
  chownSync(dir, user, group);
  const port = await freePort();
  const asPostgres = (tool: string, args: string[]) =>
    run('runuser', ['-u', 'postgres', '--', join(bin, tool), ...args]);
  await asPostgres('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8']);
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off`;
  const logFile = join(dir, 'postgres.log');
  const pgCtlArgs = ['-D', data, '-l', logFile, '-w'];
  const pgCtl = (...args: string[]) => asPostgres('pg_ctl', [...pgCtlArgs, ...args]);
  let running = false;
  const start = async () => {
    await pgCtl('-o', options, 'start');
    running = true;
  };
  const halt = async () => {
    if (running) await pgCtl('-m', 'fast', 'stop');
    running = false;
  };
  const cleanup = () => {
    if (running)
      runSync('runuser', [
        '-u',
        'postgres',
        '--',
        join(bin, 'pg_ctl'),
        ...pgCtlArgs,
        '-m',
        'immediate',
        'stop',
      ]);
    running = false;
    rmSync(dir, { recursive: true, force: true });
  };
  cleanups.add(cleanup);
  await start();
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    restart: async () => {
      await pgCtl('-o', options, '-m', 'fast', 'restart');
      running = true;
    },
    halt,
    start,
    stop: async () => {
      cleanups.delete(cleanup);
      await halt();
      cleanup();
    },
  };
}

/** A child process we can kill, and wait for. */
function spawnChild(file: string, args: string[], env: NodeJS.ProcessEnv, logFile: string) {
  const log = openSync(logFile, 'a');
  const child = spawn(file, args, { env, stdio: ['ignore', log, log], detached: true });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return { child, exited };
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals) {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // Already gone.
  }
}

/** `redis-server --port N`, no persistence, as a child of this process. */
export async function startThrowawayRedis(): Promise<ThrowawayService> {
  const dir = baseDir('redis');
  const port = await freePort();
  let current: ReturnType<typeof spawnChild> | undefined;
  const ping = async () => {
    try {
      return (await run('redis-cli', ['-p', String(port), 'ping'])).trim() === 'PONG' ? true : undefined;
    } catch {
      return undefined;
    }
  };
  const start = async () => {
    current = spawnChild(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
      process.env,
      join(dir, 'redis.log'),
    );
    await waitFor(`redis on ${port}`, ping, 30_000);
  };
  const halt = async () => {
    if (!current) return;
    killGroup(current.child, 'SIGKILL');
    await current.exited;
    current = undefined;
  };
  const cleanup = () => {
    if (current) killGroup(current.child, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  cleanups.add(cleanup);
  await start();
  return {
    url: `redis://127.0.0.1:${port}/0`,
    port,
    restart: async () => {
      await halt();
      await start();
    },
    halt,
    start,
    stop: async () => {
      cleanups.delete(cleanup);
      await halt();
      cleanup();
    },
  };
}

/**
 * A RabbitMQ node of its own: own node name, AMQP and distribution ports, config, cookie (HOME),
 * mnesia and log dirs, and no plugins (so no management or Prometheus listener). It registers
 * with the machine's epmd like any other Erlang node.
 */
export async function startThrowawayRabbitmq(): Promise<
  ThrowawayService & { ctl(...args: string[]): Promise<string> }
> {
  const dir = baseDir('rabbitmq');
  const port = await freePort();
  const distPort = await freePort();
  const node = `balance-sync-faults-${process.pid}@localhost`;
  for (const sub of ['mnesia', 'log']) mkdirSync(join(dir, sub));
  writeFileSync(join(dir, 'enabled_plugins'), '[].\n');
  writeFileSync(join(dir, 'rabbitmq.conf'), 'loopback_users = none\n');
  writeFileSync(join(dir, 'rabbitmq-env.conf'), '');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOME: dir,
    RABBITMQ_NODENAME: node,
    RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(distPort),
    RABBITMQ_CONF_ENV_FILE: join(dir, 'rabbitmq-env.conf'),
    RABBITMQ_CONFIG_FILE: join(dir, 'rabbitmq.conf'),
    RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, 'enabled_plugins'),
    RABBITMQ_MNESIA_BASE: join(dir, 'mnesia'),
    RABBITMQ_LOG_BASE: join(dir, 'log'),
    ERL_EPMD_ADDRESS: '127.0.0.1',
    ERL_FLAGS: '-kernel inet_dist_use_interface {127,0,0,1}',
  };
  const ctl = (...args: string[]) =>
    run('/usr/lib/rabbitmq/bin/rabbitmqctl', ['-q', '-n', node, ...args], env);
  const server = spawnChild('/usr/lib/rabbitmq/bin/rabbitmq-server', [], env, join(dir, 'server.log'));
  const cleanup = () => {
    killGroup(server.child, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  cleanups.add(cleanup);
  await waitFor(
    `rabbitmq node ${node}`,
    async () => {
      if (server.child.exitCode !== null) throw new Error(`rabbitmq-server exited; see ${dir}/log`);
      await ctl('await_startup', '--timeout', '5');
      return true;
    },
    90_000,
  );
  return {
    url: `amqp://guest:guest@127.0.0.1:${port}`,
    port,
    /** rabbitmqctl against this node only (e.g. set_vm_memory_high_watermark). */
    ctl,
    restart: async () => {
      await ctl('stop_app');
      await ctl('start_app');
    },
    halt: async () => void (await ctl('stop_app')),
    start: async () => void (await ctl('start_app')),
    stop: async () => {
      cleanups.delete(cleanup);
      try {
        await ctl('stop');
      } catch {
        killGroup(server.child, 'SIGKILL');
      }
      await server.exited;
      cleanup();
    },
  };
}
