import { createServer, type Socket } from 'node:net';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { connectToRabbitmq } from '../../src/rabbitmq/connection.js';
import { freePort } from '../support/dev-server.js';
import { waitFor } from '../support/harness.js';

interface Line {
  msg: string;
  err?: string;
  retryInSeconds?: number;
}

const capture = (lines: Line[]) =>
  pino({ level: 'warn' }, { write: (line: string) => void lines.push(JSON.parse(line)) });

describe('connectToRabbitmq', () => {
  it('backs off between reconnect attempts: 1 s, then 2 s, then 4 s…, each logged', async () => {
    const lines: Line[] = [];
    const port = await freePort(); // nothing listens there
    const connection = connectToRabbitmq(`amqp://127.0.0.1:${port}`, 'backoff test', capture(lines), 5);
    try {
      const waits = await waitFor(
        'three failed attempts',
        () => {
          const retries = lines
            .filter((line) => line.msg === 'cannot reach RabbitMQ; retrying')
            .map((line) => line.retryInSeconds);
          return Promise.resolve(retries.length >= 3 ? retries.slice(0, 3) : undefined);
        },
        15_000,
      );
      expect(waits).toEqual([1, 2, 4]);
    } finally {
      await connection.close();
    }
  });

  it('gives up, logs and retries a connect attempt that hears nothing for two heartbeat intervals (a hung broker)', async () => {
    // Accepts the socket and never answers, as a frozen broker's kernel does.
    const sockets: Socket[] = [];
    const silent = createServer((socket) => void sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as { port: number };
    const lines: Line[] = [];
    const startedAt = Date.now();
    const connection = connectToRabbitmq(`amqp://127.0.0.1:${port}`, 'hung test', capture(lines), 1);
    try {
      const failed = await waitFor(
        'the attempt given up',
        () => Promise.resolve(lines.find((line) => line.msg === 'cannot reach RabbitMQ; retrying')),
        5_000,
      );
      expect(failed.err).toBe('connect ETIMEDOUT');
      expect(Date.now() - startedAt).toBeGreaterThanOrEqual(1_900);
      await waitFor('a second attempt', () => Promise.resolve(sockets.length >= 2 ? true : undefined), 5_000);
    } finally {
      // First the sockets: close() waits for an attempt in progress.
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
      await connection.close();
    }
  });
});
