import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.js';
import { MAIN_JS, plainLines, spawnApp, waitUntilReady } from '../support/app-process.js';
import { freePort } from '../support/dev-server.js';
import { deleteQueues, pool, resetDatabase, testConfig, waitFor } from '../support/harness.js';

/** Process ids of every descendant of `pid` (from /proc), to find node under npm (and sh). */
function descendants(pid: number): number[] {
  let children: number[] = [];
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
      if (text) children = children.concat(text.split(/\s+/).map(Number));
    }
  } catch {
    return [];
  }
  return children.flatMap((child) => [child, ...descendants(child)]);
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const commandLine = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
  } catch {
    return '';
  }
};

async function holdPort(port: number, host?: string): Promise<Server> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  return server;
}

describe('what an operator runs', () => {
  let db: pg.Pool;
  let config: Config;
  const queues: string[] = [];

  beforeAll(async () => {
    db = pool();
    await resetDatabase(db);
  });

  afterAll(async () => {
    await deleteQueues(...queues);
    await db.end();
  });

  const newConfig = (overrides: Record<string, string> = {}) => {
    config = testConfig(overrides);
    queues.push(config.INCOMING_QUEUE, config.DEAD_LETTER_QUEUE);
    return config;
  };

  describe('`npm start`', () => {
    /** Spawns `npm start`, waits until ready, and returns it with the pid of the node it runs. */
    async function npmStart(detached = false) {
      const app = await spawnApp(newConfig(), {}, { npmStart: true, detached });
      await waitUntilReady(app);
      const node = descendants(app.child.pid!).find((pid) => commandLine(pid).includes('dist/src/main.js'));
      expect(node).toBeDefined();
      return { app, node: node! };
    }

    it('stops node gracefully when a supervisor sends SIGTERM to npm, leaving no orphan', async () => {
      const { app, node } = await npmStart();
      try {
        app.child.kill('SIGTERM');
        expect(await app.exited).toBe(0);
        await waitFor('node to exit with npm', () => Promise.resolve(alive(node) ? undefined : true), 15_000);
        expect(app.lines.some((line) => line.includes('"msg":"shutting down"'))).toBe(true);
        expect(app.lines.some((line) => line.includes('"msg":"stopped"'))).toBe(true);
      } finally {
        if (alive(node)) process.kill(node, 'SIGKILL');
      }
    });

    it('stops gracefully on Ctrl-C, and a second Ctrl-C during the shutdown does not cut it short', async () => {
      const { app, node } = await npmStart(true);
      try {
        // The terminal signals the whole foreground group (npm and node); npm forwards it to node too.
        process.kill(-app.child.pid!, 'SIGINT');
        await app.waitForLine('shutting down', (line) => line.includes('"msg":"shutting down"'));
        process.kill(-app.child.pid!, 'SIGINT');
        expect(await app.exited).toBe(0);
        await waitFor('node to exit', () => Promise.resolve(alive(node) ? undefined : true), 15_000);
        expect(app.lines.some((line) => line.includes('"msg":"stopped"'))).toBe(true);
      } finally {
        if (alive(node)) process.kill(node, 'SIGKILL');
      }
    });
  });

  describe('configuration from .env', () => {
    let dir: string;
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'balance-sync-dotenv-'));
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it('reads every setting from .env in the working directory; the environment wins over it', async () => {
      const envPort = await freePort();
      const app = await spawnApp(newConfig(), { HTTP_PORT: String(envPort) }, { dotEnvIn: dir });
      try {
        expect(readFileSync(join(dir, '.env'), 'utf8')).toContain(
          `INCOMING_QUEUE="${config.INCOMING_QUEUE}"`,
        );
        expect(readFileSync(join(dir, '.env'), 'utf8')).not.toContain(`HTTP_PORT="${envPort}"`);
        // Ready means .env gave it the test database, queues and Temporal; envPort is the environment's.
        expect(app.httpPort).toBe(envPort);
        await waitUntilReady(app);
        expect(app.lines.some((line) => line.includes('settings read from .env'))).toBe(true);
      } finally {
        await app.kill('SIGTERM');
      }
    });

    it('reports a bad value read from .env like any other, unquoted as in .env.template', () => {
      const bad = mkdtempSync(join(tmpdir(), 'balance-sync-dotenv-'));
      try {
        writeFileSync(join(bad, '.env'), 'RECONCILE_CRON=17 * * *\n');
        const run = spawnSync(process.execPath, [MAIN_JS], {
          cwd: bad,
          env: { PATH: process.env.PATH ?? '' },
          encoding: 'utf8',
        });
        expect(run.status).toBe(2);
        expect(run.stdout + run.stderr).toMatch(
          /^Invalid configuration: RECONCILE_CRON: .*got 4 field\(s\)\n$/,
        );
      } finally {
        rmSync(bad, { recursive: true, force: true });
      }
    });
  });

  describe('health from the first second', () => {
    it('answers /healthz and names Postgres on /readyz while Postgres cannot be reached', async () => {
      const app = await spawnApp(
        newConfig({ DATABASE_URL: `postgres://user:password@127.0.0.1:${await freePort()}/fxc` }),
      );
      try {
        const body = await waitFor('/readyz to answer', async () => (await app.get('/readyz')).body);
        expect(JSON.parse(body)).toEqual({ ready: false, waitingFor: 'postgres' });
        expect(await app.get('/healthz')).toEqual({ status: 200, body: '{"status":"ok"}' });
        expect((await app.get('/readyz')).status).toBe(503);
      } finally {
        await app.kill('SIGTERM');
      }
    });

    it('answers /healthz and names Temporal on /readyz while Temporal cannot be reached, in short log lines', async () => {
      const address = `127.0.0.1:${await freePort()}`;
      const app = await spawnApp(newConfig({ TEMPORAL_ADDRESS: address }));
      try {
        const line = await app.waitForLine('the retry log', (l) => l.includes('cannot reach Temporal yet'));
        expect(JSON.parse(line)).toMatchObject({ address, err: 'tcp connect error: Connection refused' });
        const readyz = await app.get('/readyz');
        expect(readyz.status).toBe(503);
        expect(JSON.parse(readyz.body)).toEqual({ ready: false, waitingFor: 'temporal' });
        expect(await app.get('/healthz')).toEqual({ status: 200, body: '{"status":"ok"}' });
        expect(await app.kill('SIGTERM')).toBe(0);
        expect(app.lines.some((l) => l.includes('"msg":"shutting down"'))).toBe(true);
      } finally {
        await app.kill('SIGKILL');
      }
    });
  });

  describe('configuration errors', () => {
    it.each([
      ['RECONCILE_CRON', 'not a cron'],
      ['RECONCILE_CRON', '0 0 L * *'],
      ['TEMPORAL_ADDRESS', 'http://localhost:7233'],
      ['BRIDGE_PREFETCH', '70000'],
      ['DEAD_LETTER_QUEUE', 'same-queue'],
    ])('refuses %s=%j before starting anything: one line, exit 2', async (variable, value) => {
      const overrides: Record<string, string> = { [variable]: value };
      if (variable === 'DEAD_LETTER_QUEUE') overrides.INCOMING_QUEUE = value;
      const app = await spawnApp(testConfig(), overrides);
      expect(await app.exited).toBe(2);
      expect(app.lines.filter((line) => line.trim() !== '')).toEqual([
        expect.stringMatching(new RegExp(`^Invalid configuration: ${variable}: `)),
      ]);
    });

    it.each([
      ['HTTP_PORT', undefined],
      ['TEMPORAL_METRICS_PORT', '127.0.0.1'],
    ])('names %s and the port when another process holds it: one line, exit 2', async (variable, host) => {
      const port = await freePort();
      const holder = await holdPort(port, host);
      try {
        const app = await spawnApp(newConfig(), { [variable]: String(port) });
        expect(await app.exited).toBe(2);
        expect(plainLines(app)).toEqual([
          `Invalid configuration: ${variable}: port ${port} is already in use by another process`,
        ]);
      } finally {
        holder.close();
      }
    });
  });
});
