import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { Resources } from '../../src/resources.js';

/** A Resources whose warn lines are collected as `message (err)`. */
function resources(boundMs?: number) {
  const warnings: string[] = [];
  const log = pino(
    { level: 'warn' },
    {
      write: (line: string) => {
        const { msg, err } = JSON.parse(line) as { msg: string; err?: string };
        warnings.push(err ? `${msg} (${err})` : msg);
      },
    },
  );
  return { opened: new Resources(log, boundMs), warnings };
}

describe('Resources', () => {
  it('closes what was added newest first, each once', async () => {
    const { opened } = resources();
    const closed: string[] = [];
    for (const name of ['http', 'pool', 'connection'])
      opened.add(name, () => Promise.resolve(void closed.push(name)));

    await opened.closeAll();
    await opened.closeAll();

    expect(closed).toEqual(['connection', 'pool', 'http']);
  });

  it('logs a close that throws or rejects, and still closes the rest', async () => {
    const { opened, warnings } = resources();
    const closed: string[] = [];
    opened.add('pool', () => void closed.push('pool'));
    opened.add('client', () => {
      throw new Error('already closed');
    });
    opened.add('connection', () => Promise.reject(new Error('socket hang up')));

    await expect(opened.closeAll()).resolves.toBeUndefined();

    expect(closed).toEqual(['pool']);
    expect(warnings).toEqual([
      'closing connection failed (socket hang up)',
      'closing client failed (already closed)',
    ]);
  });

  it('moves on from a close that overruns its bound, with a warn line', async () => {
    const { opened, warnings } = resources(20);
    const closed: string[] = [];
    opened.add('pool', () => void closed.push('pool'));
    opened.add('worker', () => new Promise(() => undefined));

    await opened.closeAll();

    expect(closed).toEqual(['pool']);
    expect(warnings).toEqual(['worker still closing; closing the rest']);
  });
});
