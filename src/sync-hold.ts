import type { Logger } from 'pino';
import { Gate, type StartGate } from './gate.js';
import type { AppMetrics } from './metrics.js';

const MINUTE_MS = 60_000;
/** A hold begins this long before the schedule fires (SYNC_LEAD_SECONDS before the minute)… */
export const HOLD_BEFORE_FIRE_MS = 1_000;
/**
 * …but never earlier than this before the minute: a longer lead is itself slack for a late fire,
 * and holding through all of it (up to 30 s) would halve a saturated drain for nothing.
 */
export const MAX_HOLD_BEFORE_MINUTE_MS = 6_000;
/** …and ends this long after the minute at the latest, when this process does not see the write. */
export const HOLD_AFTER_MINUTE_MS = 1_000;

export interface SyncHoldOptions {
  /** SYNC_LEAD_SECONDS in ms: the schedule fires this long before each minute. */
  leadMs: number;
  /**
   * Whether ingest ran at its bound within the last minute (the throttle closed, or messages waited
   * in the incoming queue) and the sync schedule is not paused: only then are starts held. Asked once per minute,
   * the first time a start asks in that minute's window.
   */
  saturated: () => boolean;
  now?: () => number;
}

/**
 * Gives each minute's sync the machine while ingest runs flat out. A drain at full speed keeps every
 * core busy (the dev server, this process's workflow threads, Postgres), and the sync's workflow task,
 * activity task and write then queue behind ingest work: measured 4–5 s late. So while ingest is
 * saturated, no new IngestTransaction is started from 1 s before the schedule fires (6 s before the
 * minute at most) until this process has written the minute (publishBalances calls `written`), or
 * HOLD_AFTER_MINUTE_MS after it when the sync runs elsewhere or fails. What is held waits in
 * RabbitMQ, and up to the prefetch unacked in the bridge. A minute holds only if ingest was saturated
 * within the minute before; decided the first time a start asks in its window, so the in-flight count
 * emptying during the hold does not end it.
 */
export class SyncHold implements StartGate {
  private readonly gate = new Gate();
  private timer: NodeJS.Timeout | undefined;
  /** The minute whose hold was decided (epoch ms), and whether that hold is on now. */
  private minute = 0;
  private holds = false;
  /** The latest minute this process wrote. */
  private writtenMinute = 0;
  private heldSince = 0;
  /** When the last hold ended (epoch ms; 0: none yet). */
  private lastEndedAt = 0;
  private stopped = false;
  private readonly now: () => number;

  constructor(
    private readonly options: SyncHoldOptions,
    private readonly deps: { metrics: AppMetrics; log: Logger },
  ) {
    this.now = options.now ?? Date.now;
  }

  /** The minute whose hold window contains `at`, if any: [minute − min(lead + 1 s, 6 s), minute + 1 s]. */
  private windowMinute(at: number): number | undefined {
    const next = Math.ceil(at / MINUTE_MS) * MINUTE_MS;
    const before = Math.min(this.options.leadMs + HOLD_BEFORE_FIRE_MS, MAX_HOLD_BEFORE_MINUTE_MS);
    if (at >= next - before) return next;
    const previous = next - MINUTE_MS;
    return at <= previous + HOLD_AFTER_MINUTE_MS ? previous : undefined;
  }

  /** Whether new starts wait now; decides the minute's hold the first time it is asked in its window. */
  holding(): boolean {
    const now = this.now();
    const minute = this.windowMinute(now);
    if (this.stopped || minute === undefined || this.writtenMinute >= minute) return this.end();
    if (minute !== this.minute) {
      this.end();
      this.minute = minute;
      this.holds = this.options.saturated();
      if (this.holds) this.begin(minute, now);
    }
    return this.holds;
  }

  /** Whether starts may go ahead now (no hold on); decides the minute's hold like `holding`. */
  isOpen(): boolean {
    return !this.holding();
  }

  /** Resolves when the current hold ends (at once if none); rejects if `signal` aborts first. */
  async wait(signal: AbortSignal): Promise<void> {
    if (!this.holding()) return;
    await this.gate.wait(signal);
  }

  /** publishBalances wrote this minute to KeyDB: the hold for it, if any, ends now. */
  written(minute: Date): void {
    this.writtenMinute = Math.max(this.writtenMinute, minute.getTime());
    if (this.minute <= this.writtenMinute) this.end();
  }

  /**
   * Whether a hold is on now or ended within the last `ms`: messages that piled up in RabbitMQ while
   * starts waited are the hold's own backlog, not a sign that ingest is saturated (BacklogWatch).
   */
  heldWithin(ms: number): boolean {
    return this.holds || (this.lastEndedAt > 0 && this.now() - this.lastEndedAt <= ms);
  }

  /** Ends a hold on now and holds nothing more (shutdown). */
  stop(): void {
    this.stopped = true;
    this.end();
  }

  private begin(minute: number, now: number) {
    this.heldSince = now;
    this.gate.close();
    this.deps.metrics.bridgeSyncHolds.inc();
    this.deps.metrics.bridgeSyncHolding.set(1);
    this.deps.log.debug(
      { minute: new Date(minute).toISOString() },
      'ingest saturated: new starts wait for the minute’s sync',
    );
    this.timer = setTimeout(() => this.end(), minute + HOLD_AFTER_MINUTE_MS - now);
    this.timer.unref();
  }

  /** Ends a running hold (if any) and wakes the waiters; returns false, for `holding`. */
  private end(): false {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.holds) {
      this.holds = false;
      this.lastEndedAt = this.now();
      this.deps.metrics.bridgeSyncHeldSeconds.inc((this.now() - this.heldSince) / 1000);
      this.deps.metrics.bridgeSyncHolding.set(0);
    }
    this.gate.open();
    return false;
  }
}
