import type { AppMetrics } from './metrics.js';

export type IngestDependency = 'postgres' | 'temporal';

/** While an outage lasts, report() asks for a warn line this often. */
const WARN_EVERY_MS = 60_000;
/** How long an outage stays reported after the last failure that showed it (retries come at most every 10 s). */
const OUTAGE_STALE_MS = 30_000;

/**
 * Which dependency the ingest path is retrying an outage of, and why: fed by the inserts and the
 * bridge's starts, read by /readyz and the `balance_sync_ingest_outage` gauge alike, so the two never
 * disagree. An outage ends at the next success, or 30 s after the last failure that showed it.
 */
export class IngestOutages {
  private readonly current = new Map<
    IngestDependency,
    { reason: string; expiry: NodeJS.Timeout; warnedAt: number }
  >();

  constructor(private readonly metrics: AppMetrics) {
    for (const dependency of ['postgres', 'temporal'] as const) metrics.ingestOutage.set({ dependency }, 0);
  }

  /**
   * Records a failure that means `dependency` cannot be used now. True when the caller should log a
   * warning: the outage is new, its reason changed, or a minute passed since the last one.
   */
  report(dependency: IngestDependency, reason: string): boolean {
    const previous = this.current.get(dependency);
    clearTimeout(previous?.expiry);
    const now = Date.now();
    const warn = !previous || previous.reason !== reason || now - previous.warnedAt >= WARN_EVERY_MS;
    const expiry = setTimeout(() => this.clear(dependency), OUTAGE_STALE_MS).unref();
    this.current.set(dependency, { reason, expiry, warnedAt: warn ? now : previous.warnedAt });
    this.metrics.ingestOutage.set({ dependency }, 1);
    return warn;
  }

  /** Records a success: the outage of `dependency`, if any, is over. */
  clear(dependency: IngestDependency): void {
    const outage = this.current.get(dependency);
    if (!outage) return;
    clearTimeout(outage.expiry);
    this.current.delete(dependency);
    this.metrics.ingestOutage.set({ dependency }, 0);
  }

  /** The outages going on now, each with the last reason seen. */
  reasons(): Partial<Record<IngestDependency, string>> {
    return Object.fromEntries([...this.current].map(([dependency, { reason }]) => [dependency, reason]));
  }
}
