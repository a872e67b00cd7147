import type { Client } from '@temporalio/client';
import { describe, expect, it } from 'vitest';
import { TemporalProbe } from '../../src/temporal-probe.js';
import { silentLog, waitFor } from '../support/harness.js';

const CONNECTION_REFUSED = new Error(
  'tonic::transport::Error(Transport, ConnectError("tcp connect error", Os { message: "Connection refused" }))',
);

/** A client whose GetSystemInfo answers while `state.up`, and fails with `error` otherwise. */
function client(state: { up: boolean }, error: Error = CONNECTION_REFUSED) {
  return {
    withDeadline: (_deadline: number, fn: () => Promise<unknown>) => fn(),
    workflowService: {
      getSystemInfo: () => (state.up ? Promise.resolve({}) : Promise.reject(error)),
    },
  } as unknown as Client;
}

describe('TemporalProbe: one probe for the bridge’s gate and readiness', () => {
  it('closes the gate with the reason readiness reports while Temporal fails, and opens it again', async () => {
    const state = { up: false };
    const probe = new TemporalProbe(client(state), { log: silentLog() });
    probe.start();
    try {
      await waitFor('the probe to see Temporal down', () =>
        Promise.resolve(probe.isOpen() ? undefined : true),
      );
      expect(probe.downReason()).toBe('tcp connect error: Connection refused');
      const waiting = probe.wait(new AbortController().signal);
      state.up = true;
      await waiting;
      expect(probe.isOpen()).toBe(true);
      expect(probe.downReason()).toBeUndefined();
    } finally {
      probe.stop();
    }
  });

  it('names the API key when the server refuses this client (PERMISSION_DENIED: a key expired or revoked)', async () => {
    const refused = Object.assign(new Error('Request unauthorized.'), { code: 7 });
    const probe = new TemporalProbe(client({ up: false }, refused), { log: silentLog() });
    probe.start();
    try {
      await waitFor('the probe to see Temporal refuse', () =>
        Promise.resolve(probe.isOpen() ? undefined : true),
      );
      expect(probe.downReason()).toBe(
        "the server refused this client's credentials (TEMPORAL_API_KEY): Request unauthorized.",
      );
    } finally {
      probe.stop();
    }
  });
});
