import type { Client } from '@temporalio/client';
import pino from 'pino';
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
async function withThrottle(
  state: Visibility,
  body: (throttle: InFlightThrottle) => Promise<void>,
  deps = { metrics: createMetrics(), log: silentLog() },
  stallAfterMs?: number,
) {
  const throttle = new InFlightThrottle(
    countingClient(state),
    { taskQueue: 'q', maxInFlight: 8, pollMs: 10, stallAfterMs },
    deps,
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

  it('warns and sets bridge_throttle_stalled when it stays closed with no run finishing, and clears it when one does', async () => {
    const state: Visibility = { count: 8 };
    const metrics = createMetrics();
    const warnings: string[] = [];
    const log = pino(
      { level: 'warn' },
      { write: (line: string) => void warnings.push(JSON.parse(line).msg) },
    );
    const stalled = async () => (await metrics.bridgeThrottleStalled.get()).values[0]?.value;
    await withThrottle(
      state,
      async (throttle) => {
        await waitFor('the throttle to close', () =>
          Promise.resolve(throttle.isThrottling() ? true : undefined),
        );
        expect(await stalled()).toBe(0);
        await waitFor('the stall to show', async () => ((await stalled()) === 1 ? true : undefined));
        expect(warnings).toEqual([expect.stringMatching(/^throttle stalled/)]);
        state.count = 7; // a run finished; still closed (above 3/4 of 8)
        await waitFor('the stall to clear', async () => ((await stalled()) === 0 ? true : undefined));
        expect(throttle.isThrottling()).toBe(true);
      },
      { metrics, log },
      200,
    );
  });
});
