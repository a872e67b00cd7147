import type { Client } from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import { InFlightThrottle } from '../../src/bridge/in-flight-throttle.js';
import { createMetrics } from '../../src/metrics.js';
import { silentLog, waitFor } from '../support/harness.js';

type Visibility = { count: number | undefined; polls?: number };

/** A client whose CountWorkflowExecutions answers `count` (counting `polls`), or fails while it is undefined. */
function countingClient(state: Visibility) {
  return {
    workflow: {
      count: () => {
        state.polls = (state.polls ?? 0) + 1;
        return state.count === undefined
          ? Promise.reject(new Error('visibility unavailable'))
          : Promise.resolve({ count: state.count });
      },
    },
  } as unknown as Client;
}

/** Runs `body` against a started throttle (bound 8, polling every 10 ms) counting `state.count`. */
async function withThrottle(state: Visibility, body: (throttle: InFlightThrottle) => Promise<void>) {
  const throttle = new InFlightThrottle(
    countingClient(state),
    { taskQueue: 'q', maxInFlight: 8, pollMs: 10 },
    { metrics: createMetrics(), log: silentLog() },
  );
  throttle.start();
  try {
    await body(throttle);
  } finally {
    throttle.stop();
  }
}

const opened = (throttle: InFlightThrottle) =>
  waitFor('the throttle to open', () => Promise.resolve(throttle.isThrottling() ? undefined : true));

describe('InFlightThrottle', () => {
  it('closes at the bound, and opens again at 3/4 of it once runs finish', async () => {
    const state: Visibility = { count: 0 };
    await withThrottle(state, async (throttle) => {
      for (let i = 0; i < 8; i++) throttle.noteStart();
      expect(throttle.isThrottling()).toBe(true);
      state.count = 7;
      const polled = state.polls ?? 0;
      await waitFor('two polls counting 7', () =>
        Promise.resolve((state.polls ?? 0) >= polled + 2 ? true : undefined),
      );
      expect(throttle.isThrottling()).toBe(true); // below the bound, but not yet at 3/4 of it
      state.count = 6;
      await opened(throttle);
    });
  });

  it('opens when runs cannot be counted, instead of holding every delivery for good', async () => {
    const state: Visibility = { count: 0 };
    await withThrottle(state, async (throttle) => {
      state.count = undefined;
      for (let i = 0; i < 8; i++) throttle.noteStart();
      expect(throttle.isThrottling()).toBe(true);
      await opened(throttle);
    });
  });
});
