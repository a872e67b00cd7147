import type pg from 'pg';

/**
 * Answers "does provider N exist in initial_data?" from a cached set. A miss reloads the set (at most
 * once per `minReloadMs`, shared by concurrent callers), so providers added later are found. The
 * interval is timed on a monotonic clock: a wall clock stepped back cannot stop the reloads.
 */
export class ProviderDirectory {
  private known = new Set<number>();
  private lastLoad = -Infinity;
  private loading: Promise<void> | undefined;

  constructor(
    private readonly pool: pg.Pool,
    private readonly minReloadMs = 1000,
    /** Milliseconds from any fixed origin, never going back. */
    private readonly monotonicMs: () => number = () => performance.now(),
  ) {}

  async has(providerId: number): Promise<boolean> {
    if (this.known.has(providerId)) return true;
    if (this.monotonicMs() - this.lastLoad >= this.minReloadMs) await this.reload();
    return this.known.has(providerId);
  }

  private reload(): Promise<void> {
    this.loading ??= this.pool
      .query<{ id: number }>('SELECT id FROM initial_data')
      .then(({ rows }) => {
        this.known = new Set(rows.map((row) => row.id));
        this.lastLoad = this.monotonicMs();
      })
      .finally(() => {
        this.loading = undefined;
      });
    return this.loading;
  }
}
