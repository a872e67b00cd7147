import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';

/**
 * Answers "does provider N exist in initial_data?" from a cached set. A miss is answered by a load
 * of the set begun after it (so a provider added a moment ago is found, never refused because a load
 * just happened); loads are shared by concurrent callers and start at most once per `minReloadMs`,
 * a miss waiting for the interval to pass. The interval is timed on a monotonic clock: a wall clock
 * stepped back cannot stop the reloads.
 */
export class ProviderDirectory {
  private known = new Set<number>();
  /** When the load that filled `known` began, and when the last load began. */
  private loadedFrom = -Infinity;
  private lastStart = -Infinity;
  private loading: Promise<void> | undefined;

  constructor(
    private readonly pool: pg.Pool,
    private readonly minReloadMs = 1000,
    /** Milliseconds from any fixed origin, never going back. */
    private readonly monotonicMs: () => number = () => performance.now(),
  ) {}

  async has(providerId: number): Promise<boolean> {
    if (this.known.has(providerId)) return true;
    const missedAt = this.monotonicMs();
    while (this.loadedFrom < missedAt) {
      const wait = this.lastStart + this.minReloadMs - this.monotonicMs();
      if (wait > 0 && !this.loading) await sleep(wait);
      await this.reload();
    }
    return this.known.has(providerId);
  }

  private reload(): Promise<void> {
    if (!this.loading) {
      const startedAt = this.monotonicMs();
      this.lastStart = startedAt;
      this.loading = this.pool
        .query<{ id: number }>('SELECT id FROM initial_data')
        .then(({ rows }) => {
          this.known = new Set(rows.map((row) => row.id));
          this.loadedFrom = startedAt;
        })
        .finally(() => {
          this.loading = undefined;
        });
    }
    return this.loading;
  }
}
