import type { Client } from '@temporalio/client';
import type { Logger } from 'pino';
import type { AppMetrics } from '../metrics.js';
import { Gate, type StartGate } from '../gate.js';

/** How often Temporal's health is checked, and how long a check may take before Temporal counts as down. */
const PROBE_INTERVAL_MS = 1_000;
const PROBE_DEADLINE_MS = 2_000;

/**
 * Whether Temporal's frontend answers a health check within PROBE_DEADLINE_MS, checked every second.
 * A frozen or partitioned server (socket open, no answers) counts as down within about 3 s, so the
 * bridge holds starts at its gate instead of sending them into a connection that may deliver them
 * much later.
 */
export class TemporalProbe implements StartGate {
  private readonly gate = new Gate();
  private timer: NodeJS.Timeout | undefined;
  private probing = false;

  constructor(
    private readonly client: Client,
    private readonly deps: { metrics: AppMetrics; log: Logger },
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.probe(), PROBE_INTERVAL_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.set(true);
  }

  isUp(): boolean {
    return this.gate.isOpen();
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
      if (this.isUp())
        this.deps.log.warn(
          { err: (error as Error).message },
          'Temporal does not answer; holding workflow starts',
        );
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
