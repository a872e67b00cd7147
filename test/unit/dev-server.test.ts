import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { startDevServer, type DevServer } from '../support/dev-server.js';

describe('the test harness dev server on a file', () => {
  let server: DevServer | undefined;
  const dir = mkdtempSync(join(tmpdir(), 'balance-sync-dev-server-'));
  afterEach(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs SQLite in WAL mode, as compose does (a -wal file next to the database)', async () => {
    const dbFile = join(dir, 'temporal.db');
    server = await startDevServer(inject('temporalCliPath'), { dbFile });
    expect(existsSync(`${dbFile}-wal`)).toBe(true);
  });
});
