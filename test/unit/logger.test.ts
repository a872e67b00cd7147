import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { temporalLogger } from '../../src/logger.js';

/** The SDK's log entries as the app's pino writes them: level and message. */
function capture() {
  const lines: { level: number; msg: string; source: string }[] = [];
  const out = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(JSON.parse(chunk.toString()) as { level: number; msg: string; source: string });
      done();
    },
  });
  return { lines, logger: temporalLogger(pino({ level: 'info' }, out)) };
}

describe('temporalLogger', () => {
  it("keeps the SDK's levels, and logs the instance writer worker's expected warning at info, no other worker's", () => {
    const { lines, logger } = capture();
    const warning = 'No workflows registered, not polling for workflow tasks';
    logger.warn(warning, { taskQueue: 'balance-sync-sync/instance-0b6f3c1e-5d2a-4e8b-9f7c-1a2b3c4d5e6f' });
    logger.warn(warning, { taskQueue: 'balance-sync' });
    logger.warn('Workflow task duration exceeded 5 seconds');
    logger.error('boom');
    logger.info('Worker state changed');
    expect(lines.map(({ level, msg, source }) => [level, msg, source])).toEqual([
      [30, 'No workflows registered, not polling for workflow tasks', 'temporal'],
      [40, 'No workflows registered, not polling for workflow tasks', 'temporal'],
      [40, 'Workflow task duration exceeded 5 seconds', 'temporal'],
      [50, 'boom', 'temporal'],
      [30, 'Worker state changed', 'temporal'],
    ]);
  });
});
