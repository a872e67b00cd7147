import type { Client } from '@temporalio/client';
import type { Logger } from 'pino';
import type { AppMetrics } from '../metrics.js';
import { Gate, type StartGate } from '../gate.js';

export interface ThrottleOptions {
  taskQueue: string;
  /** Start nothing while this many IngestTransaction runs are unfinished; 0 disables the throttle. */
  maxInFlight: number;
  pollMs?: number;
  /** Closed this long with no run finishing: warn and set the stalled gauge (default 2 minutes). */
  stallAfterMs?: number;
}

/** How long the throttle may stay closed with no run finishing before it says so. */
export const THROTTLE_STALL_MS = 2 * 60_000;

/**
 * Holds new IngestTransaction starts while `maxInFlight` or more runs on the ingest task queue are
 * unfinished (started, not completed or failed), so a backlog waits in RabbitMQ, not in Temporal. The
 * count comes from Temporal's visibility (CountWorkflowExecutions, one RPC per poll): it covers every
 * instance and knows when runs finish. DescribeTaskQueue's backlog was the other candidate, but the
 * server caches those stats for ~5 s (measured on 1.29.1), far too stale to bound a fast drain.
 * Between polls this instance's own starts are added to the count. Opens again at 3/4 of the bound.
 * Closed for `stallAfterMs` with no run finishing (the count never dropped), it warns and sets
 * `bridge_throttle_stalled`: runs are stuck, and the throttle must not be what hides it.
 */
export class InFlightThrottle implements StartGate {
  private readonly gate = new Gate();
  private timer: NodeJS.Timeout | undefined;
  private polling = false;
  private running = 0;
  private startsSincePoll = 0;
  private lastWarning = 0;
  /** While closed: when the throttle closed or the count last dropped (a run finished). */
  private lastProgress = 0;
  private stalled = false;
  /** When the throttle last closed (0: never). */
  private lastClosedAt = 0;

  constructor(
    private readonly client: Client,
    private readonly options: ThrottleOptions,
    private readonly deps: { metrics: AppMetrics; log: Logger },
  ) {}

  start(): void {
    if (this.options.maxInFlight === 0) return;
    this.timer = setInterval(() => void this.poll(), this.options.pollMs ?? 500);
    this.timer.unref();
    void this.poll();
  }

  isThrottling(): boolean {
    return !this.gate.isOpen();
  }

  isOpen(): boolean {
    return this.gate.isOpen();
  }

  /** Whether it is closed now or closed within the last `ms`: ingest has been running at its bound. */
  closedWithin(ms: number): boolean {
    return this.isThrottling() || (this.lastClosedAt > 0 && Date.now() - this.lastClosedAt <= ms);
  }

  /** Resolves once starts may go ahead (at once when open); rejects if `signal` aborts first. */
  wait(signal: AbortSignal): Promise<void> {
    return this.gate.wait(signal);
  }

  /** Counts a start made since the last poll; closes the throttle if that passes the bound. */
  noteStart(): void {
    if (this.options.maxInFlight === 0) return;
    this.startsSincePoll++;
    this.update();
  }

  stop(): void {
    clearInterval(this.timer);
    this.open();
  }

  private async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    const startsBefore = this.startsSincePoll;
    try {
      const { count } = await this.client.workflow.count(
        `WorkflowType = 'IngestTransaction' AND ExecutionStatus = 'Running' AND TaskQueue = ${JSON.stringify(this.options.taskQueue)}`,
      );
      if (count < this.running) this.lastProgress = Date.now();
      this.running = count;
      this.startsSincePoll -= startsBefore;
      this.deps.metrics.ingestWorkflowsRunning.set(count);
      this.update();
    } catch (error) {
      // Fail open: without a count, starts made since the last one would close the throttle for
      // good (nothing would subtract them) while /readyz stays green. If Temporal itself is down,
      // starts fail and retry anyway. Said once a minute.
      this.running = 0;
      this.startsSincePoll = 0;
      this.update();
      if (Date.now() - this.lastWarning >= 60_000) {
        this.lastWarning = Date.now();
        this.deps.log.warn(
          { err: (error as Error).message },
          'cannot count unfinished IngestTransaction runs; BRIDGE_MAX_IN_FLIGHT is not enforced meanwhile',
        );
      }
    } finally {
      this.polling = false;
    }
  }

  private update(): void {
    const { maxInFlight } = this.options;
    const inFlight = this.running + this.startsSincePoll;
    const closed = this.isThrottling();
    if (!closed && inFlight >= maxInFlight) {
      this.gate.close();
      this.lastProgress = Date.now();
      this.lastClosedAt = this.lastProgress;
      this.deps.metrics.bridgeThrottled.set(1);
      this.deps.log.info(
        { inFlight, maxInFlight },
        'throttling: BRIDGE_MAX_IN_FLIGHT ingest workflows unfinished',
      );
    } else if (closed && inFlight <= (maxInFlight * 3) / 4) {
      this.deps.log.info({ inFlight, maxInFlight }, 'throttle released: ingest workflows finishing');
      this.open();
    } else if (closed) {
      this.noteStall(inFlight);
    }
  }

  /** Sets or clears `stalled`: closed for stallAfterMs since it closed or a run last finished. */
  private noteStall(inFlight: number): void {
    const stallAfterMs = this.options.stallAfterMs ?? THROTTLE_STALL_MS;
    const stalled = Date.now() - this.lastProgress >= stallAfterMs;
    if (stalled === this.stalled) return;
    this.stalled = stalled;
    this.deps.metrics.bridgeThrottleStalled.set(stalled ? 1 : 0);
    if (stalled)
      this.deps.log.warn(
        {
          inFlight,
          maxInFlight: this.options.maxInFlight,
          stalledForSeconds: Math.round(stallAfterMs / 1000),
        },
        'throttle stalled: no IngestTransaction run finished while it was closed; runs are stuck (see /readyz, ingest_outage)',
      );
    else this.deps.log.info({ inFlight }, 'throttle no longer stalled: an ingest run finished');
  }

  private open(): void {
    this.stalled = false;
    this.deps.metrics.bridgeThrottleStalled.set(0);
    this.deps.metrics.bridgeThrottled.set(0);
    this.gate.open();
  }
}
