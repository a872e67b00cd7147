import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isOutage } from '../../src/failures.js';
import { createPool } from '../../src/postgres/pools.js';

describe('Postgres pools', () => {
  // A "Postgres" that accepts the TCP connection and never answers its start-up message (a stopped or
  // swapping server): without a connect bound, a query would wait for ever.
  let hung: Server;
  const sockets: Socket[] = [];
  beforeAll(async () => {
    hung = createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => hung.listen(0, '127.0.0.1', resolve));
  });
  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => hung.close(resolve));
  });

  it('gives up connecting to a server that accepts the socket but never answers, as an outage', async () => {
    const { port } = hung.address() as AddressInfo;
    const pool = createPool(`postgres://user:password@127.0.0.1:${port}/fxc`, 'sync', () => undefined);
    const started = Date.now();
    const failure = await pool.query('SELECT 1').then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(failure).toBeInstanceOf(Error);
    expect(isOutage(failure)).toBe(true);
    expect(Date.now() - started).toBeLessThan(8_000);
    await pool.end().catch(() => undefined);
  }, 20_000);
});
