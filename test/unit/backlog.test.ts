import pino from 'pino';
import { describe, expect, it, vi } from 'vitest';
import { AFTER_HOLD_IGNORED_MS, saturation, watchBacklog } from '../../src/bridge/backlog.js';

/** A connection whose passive declare answers `ready()` (or throws what it throws, or never answers). */
function fakeConnection(ready: () => number | 'never') {
  const checked: string[] = [];
  const model = {
    createChannel: () =>
      Promise.resolve({
        on: () => undefined,
        close: () => Promise.resolve(),
        checkQueue: (queue: string) => {
          checked.push(queue);
          return new Promise<{ queue: string; messageCount: number; consumerCount: number }>((resolve) => {
            const count = ready();
            if (count !== 'never') resolve({ queue, messageCount: count, consumerCount: 1 });
          });
        },
      }),
  };
  return { checked, connection: { connection: model } as never };
}

function recordingLog() {
  const warnings: string[] = [];
  const log = pino({ level: 'silent' });
  log.warn = ((_fields: unknown, message: string) => warnings.push(message)) as never;
  return { log, warnings };
}

describe('watchBacklog', () => {
  it('sees ready messages in the incoming queue, and remembers them for the window asked', async () => {
    let ready = 0;
    const { connection, checked } = fakeConnection(() => ready);
    const watch = watchBacklog(connection, 'incoming_transactions', pino({ level: 'silent' }), {
      heldWithin: () => false,
      intervalMs: 5,
    });
    try {
      await vi.waitFor(() => expect(checked.length).toBeGreaterThanOrEqual(2));
      expect(watch.seenWithin(60_000)).toBe(false);
      ready = 3;
      await vi.waitFor(() => expect(watch.seenWithin(60_000)).toBe(true));
      expect(checked.every((queue) => queue === 'incoming_transactions')).toBe(true);
      ready = 0;
      const seenAt = Date.now();
      const before = checked.length;
      await vi.waitFor(() => expect(checked.length).toBeGreaterThanOrEqual(before + 3));
      // An empty queue since then does not forget what was seen within the window…
      expect(watch.seenWithin(60_000)).toBe(true);
      // …but a window that ends before it does.
      await vi.waitFor(() => expect(Date.now() - seenAt).toBeGreaterThan(20));
      expect(watch.seenWithin(1)).toBe(false);
    } finally {
      watch.stop();
    }
  });

  it('does not count what piled up during a hold for the sync, or just after it', async () => {
    let held = true;
    const { connection, checked } = fakeConnection(() => 5);
    const watch = watchBacklog(connection, 'incoming_transactions', pino({ level: 'silent' }), {
      heldWithin: (ms) => {
        expect(ms).toBe(AFTER_HOLD_IGNORED_MS);
        return held;
      },
      intervalMs: 5,
    });
    try {
      await vi.waitFor(() => expect(checked.length).toBeGreaterThanOrEqual(3));
      expect(watch.seenWithin(60_000)).toBe(false);
      held = false;
      await vi.waitFor(() => expect(watch.seenWithin(60_000)).toBe(true));
    } finally {
      watch.stop();
    }
  });

  it('gives up on a check that never answers, and checks again', async () => {
    const { warnings, log } = recordingLog();
    let calls = 0;
    const { connection } = fakeConnection(() => (++calls === 1 ? 'never' : 2));
    const watch = watchBacklog(connection, 'incoming_transactions', log, {
      heldWithin: () => false,
      intervalMs: 5,
      timeoutMs: 50,
    });
    try {
      await vi.waitFor(() => expect(watch.seenWithin(60_000)).toBe(true));
      expect(warnings).toEqual([
        'cannot read the incoming queue’s depth; the sync hold sees only the throttle',
      ]);
    } finally {
      watch.stop();
    }
  });

  it('checks nothing while disconnected, without a word', async () => {
    const { warnings, log } = recordingLog();
    let looked = 0;
    const disconnected = {
      get connection() {
        looked++;
        return undefined;
      },
    };
    const watch = watchBacklog(disconnected, 'incoming_transactions', log, {
      heldWithin: () => false,
      intervalMs: 5,
    });
    await vi.waitFor(() => expect(looked).toBeGreaterThanOrEqual(3));
    watch.stop();
    expect(watch.seenWithin(60_000)).toBe(false);
    expect(warnings).toEqual([]);
  });

  it('warns once per distinct reason when the depth cannot be read', async () => {
    const { warnings, log } = recordingLog();
    let failures = 0;
    const { connection, checked } = fakeConnection(() => {
      failures++;
      throw new Error(failures < 5 ? 'NOT_FOUND' : 'ACCESS_REFUSED');
    });
    const watch = watchBacklog(connection, 'incoming_transactions', log, {
      heldWithin: () => false,
      intervalMs: 5,
    });
    try {
      await vi.waitFor(() => expect(checked.length).toBeGreaterThanOrEqual(8));
      expect(warnings).toEqual([
        'cannot read the incoming queue’s depth; the sync hold sees only the throttle',
        'cannot read the incoming queue’s depth; the sync hold sees only the throttle',
      ]);
      expect(watch.seenWithin(60_000)).toBe(false);
    } finally {
      watch.stop();
    }
  });
});

describe('saturation', () => {
  const throttle = (closed: boolean) => ({ closedWithin: () => closed });
  const backlog = (seen: boolean) => ({ seenWithin: () => seen, stop: () => undefined });

  it.each([
    ['the throttle closed', throttle(true), backlog(false), true],
    ['messages waited in the queue', throttle(false), backlog(true), true],
    ['the throttle closed, no backlog watch (no sync hold)', throttle(true), undefined, true],
    ['neither', throttle(false), backlog(false), false],
  ])('%s', (_, gate, watch, saturated) => {
    expect(saturation(gate, watch)(60_000)).toBe(saturated);
  });
});
