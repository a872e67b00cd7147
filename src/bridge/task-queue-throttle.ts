import type { Client } from '@temporalio/client';
import type { Logger } from 'pino';
import type { AppMetrics } from '../metrics.js';

export interface ThrottleOptions {
  namespace: string;
  taskQueue: string;
  /** Start nothing while more workflow tasks than this wait on the task queue; 0 disables the throttle. */
  maxBacklog: number;
  pollMs?: number;
}

/**
 * Holds new IngestTransaction starts while the ingest task queue's backlog (DescribeTaskQueue stats)
 * is above `maxBacklog`, so a backlog waits in RabbitMQ, not in Temporal. It opens again at half the
 * bound (fewer flips). One RPC per poll, and it sees the work of every instance on the queue. Between
 * polls, this instance's own starts count as backlog until the next poll says otherwise, so a burst
 * cannot overshoot the bound by a poll interval's worth of starts.
 */
export class TaskQueueThrottle {
  private closed = false;
  private waiters: (() => void)[] = [];
  private timer: NodeJS.Timeout | undefined;
  private polling = false;
  private backlog = 0;
  private startsSincePoll = 0;

  constructor(
    private readonly client: Client,
    private readonly options: ThrottleOptions,
    private readonly deps: { metrics: AppMetrics; log: Logger },
  ) {}

  start(): void {
    if (this.options.maxBacklog === 0) return;
    this.timer = setInterval(() => void this.poll(), this.options.pollMs ?? 500);
    this.timer.unref();
    void this.poll();
  }

  isThrottling(): boolean {
    return this.closed;
  }

  /** Resolves once starts may go ahead (at once when open); rejects if `signal` aborts first. */
  async whenOpen(signal: AbortSignal): Promise<void> {
    if (!this.closed) return;
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => reject(signal.reason as Error);
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(() => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      });
    });
  }

  /** Counts a start made since the last poll; closes the throttle if that passes the bound. */
  noteStart(): void {
    if (this.options.maxBacklog === 0) return;
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
      const { stats } = await this.client.workflowService.describeTaskQueue({
        namespace: this.options.namespace,
        taskQueue: { name: this.options.taskQueue, kind: 1 }, // TASK_QUEUE_KIND_NORMAL
        taskQueueType: 1, // TASK_QUEUE_TYPE_WORKFLOW
        reportStats: true,
      });
      this.backlog = Number(stats?.approximateBacklogCount ?? 0);
      this.startsSincePoll -= startsBefore;
      this.deps.metrics.ingestTaskQueueBacklog.set(this.backlog);
      this.update();
    } catch (error) {
      // Temporal unreachable: starts fail and retry anyway; keep the last known state.
      this.deps.log.debug({ err: (error as Error).message }, 'cannot read the ingest task queue backlog');
    } finally {
      this.polling = false;
    }
  }

  private update(): void {
    const { maxBacklog } = this.options;
    const backlog = this.backlog + this.startsSincePoll;
    if (!this.closed && backlog > maxBacklog) {
      this.closed = true;
      this.deps.metrics.bridgeThrottled.set(1);
      this.deps.log.info({ backlog, maxBacklog }, 'throttling: ingest task queue backlog above its bound');
    } else if (this.closed && backlog <= maxBacklog / 2) {
      this.deps.log.info({ backlog, maxBacklog }, 'throttle released: ingest task queue backlog down');
      this.open();
    }
  }

  private open(): void {
    this.closed = false;
    this.deps.metrics.bridgeThrottled.set(0);
    const waiters = this.waiters;
    this.waiters = [];
    for (const resolve of waiters) resolve();
  }
}
