import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { connectToRabbitmq } from '../../src/rabbitmq/connection.js';
import { freePort } from '../support/dev-server.js';
import { waitFor } from '../support/harness.js';

describe('connectToRabbitmq', () => {
  it('backs off between reconnect attempts: 1 s, then 2 s, then 4 s…, each logged', async () => {
    const lines: { msg: string; retryInSeconds?: number }[] = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const port = await freePort(); // nothing listens there
    const connection = connectToRabbitmq(`amqp://127.0.0.1:${port}`, 'backoff test', log);
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
});
