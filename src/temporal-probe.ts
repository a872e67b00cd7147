import type { Client } from '@temporalio/client';
import type { Logger } from 'pino';
import { Gate, type StartGate } from './gate.js';
import { apiKeySetting, isRefusal, transportReason } from './temporal-connection.js';

/** How often Temporal's health is checked, and how long a check may take before Temporal counts as down. */
const PROBE_INTERVAL_MS = 1_000;
const PROBE_DEADLINE_MS = 2_000;

/**
 * Whether Temporal's frontend answers a health check within PROBE_DEADLINE_MS, checked every second.
 * A frozen or partitioned server (socket open, no answers) counts as down within about 3 s, so the
 * bridge holds starts at this gate instead of sending them into a connection that may deliver them
 * much later. Readiness reads the same probe (`downReason`), so /readyz and the bridge agree. A server
 * that answers by refusing this client (its API key expired or revoked) counts as down too, named so.
 */
export class TemporalProbe implements StartGate {
  private readonly gate = new Gate();
  /** Why the last probe failed, while Temporal counts as down. */
  private reason: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private probing = false;

  constructor(
    private readonly client: Client,
    private readonly deps: { log: Logger },
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.probe(), PROBE_INTERVAL_MS);
    this.timer.unref();
    void this.probe();
  }

  stop(): void {
    clearInterval(this.timer);
    this.set(true);
  }

  isUp(): boolean {
    return this.gate.isOpen();
  }

  /** Why Temporal counts as down (the last probe's error), or undefined while it answers. */
  downReason(): string | undefined {
    return this.isUp() ? undefined : this.reason;
  }

  isOpen(): boolean {
    return this.gate.isOpen();
  }

  /** Resolves once Temporal answers (at once when it does); rejects if `signal` aborts first. */
  wait(signal: AbortSignal): Promise<void> {
    return this.gate.wait(signal);
  }

  private async probe(): Promise<void> {
    if (this.probing) return;
    this.probing = true;
    try {
      await this.client.withDeadline(Date.now() + PROBE_DEADLINE_MS, () =>
        this.client.workflowService.getSystemInfo({}),
      );
      this.set(true);
    } catch (error) {
      const refused = isRefusal(error);
      if (this.isUp())
        this.deps.log.warn(
          { err: (error as Error).message },
          refused
            ? `Temporal refuses this client's credentials (${apiKeySetting()}); holding workflow starts`
            : 'Temporal does not answer; holding workflow starts',
        );
      this.reason = refused
        ? `the server refused this client's credentials (${apiKeySetting()}): ${(error as Error).message}`
        : transportReason((error as Error).message);
      this.set(false);
    } finally {
      this.probing = false;
    }
  }

  private set(up: boolean): void {
    if (up && !this.isUp()) this.deps.log.info('Temporal answers again');
    if (up) this.gate.open();
    else this.gate.close();
  }
}
