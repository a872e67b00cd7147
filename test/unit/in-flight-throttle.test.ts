import type { Client } from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import { InFlightThrottle } from '../../src/bridge/in-flight-throttle.js';
import { createMetrics } from '../../src/metrics.js';
import { silentLog, waitFor } from '../support/harness.js';

/** A client whose CountWorkflowExecutions answers `count`, or fails while it is undefined. */
function countingClient(state: { count: number | undefined }) {
  return {
    workflow: {
      count: () =>
        state.count === undefined
          ? Promise.reject(new Error('visibility unavailable'))
          : Promise.resolve({ count: state.count }),
    },
  } as unknown as Client;
}

/** Runs `body` against a started throttle (bound 4, polling every 10 ms) counting `state.count`. */
async function withThrottle(
  state: { count: number | undefined },
  body: (throttle: InFlightThrottle) => Promise<void>,
) {
  const throttle = new InFlightThrottle(
    countingClient(state),
    { taskQueue: 'q', maxInFlight: 4, pollMs: 10 },
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
    const state: { count: number | undefined } = { count: 0 };
    await withThrottle(state, async (throttle) => {
      for (let i = 0; i < 4; i++) throttle.noteStart();
      expect(throttle.isThrottling()).toBe(true);
      state.count = 3;
      await opened(throttle);
    });
  });

  it('opens when runs cannot be counted, instead of holding every delivery for good', async () => {
    const state: { count: number | undefined } = { count: 0 };
    await withThrottle(state, async (throttle) => {
      state.count = undefined;
      for (let i = 0; i < 4; i++) throttle.noteStart();
      expect(throttle.isThrottling()).toBe(true);
      await opened(throttle);
    });
  });
});
