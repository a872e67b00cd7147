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

describe('InFlightThrottle', () => {
  it('closes at the bound, and opens again at 3/4 of it once runs finish', async () => {
    const state: { count: number | undefined } = { count: 0 };
    const throttle = new InFlightThrottle(
      countingClient(state),
      { taskQueue: 'q', maxInFlight: 4, pollMs: 10 },
      { metrics: createMetrics(), log: silentLog() },
    );
    throttle.start();
    try {
      for (let i = 0; i < 4; i++) throttle.noteStart();
      expect(throttle.isThrottling()).toBe(true);
      state.count = 3;
      await waitFor('the throttle to open', () =>
        Promise.resolve(throttle.isThrottling() ? undefined : true),
      );
    } finally {
      throttle.stop();
    }
  });

  it('opens when runs cannot be counted, instead of holding every delivery for good', async () => {
    const state: { count: number | undefined } = { count: 0 };
    const throttle = new InFlightThrottle(
      countingClient(state),
      { taskQueue: 'q', maxInFlight: 4, pollMs: 10 },
      { metrics: createMetrics(), log: silentLog() },
    );
    throttle.start();
    try {
      state.count = undefined;
      for (let i = 0; i < 4; i++) throttle.noteStart();
      expect(throttle.isThrottling()).toBe(true);
      await waitFor('the throttle to open', () =>
        Promise.resolve(throttle.isThrottling() ? undefined : true),
      );
    } finally {
      throttle.stop();
    }
  });
});
