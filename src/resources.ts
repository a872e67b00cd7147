import pTimeout from 'p-timeout';
import type { Logger } from 'pino';

/**
 * Longer than any close bounds itself (the bridge's drain 15 s, a worker's forced stop 8 s), and
 * short enough that main.ts's 27 s deadline still sees the closes after a hung one.
 */
const CLOSE_BOUND_MS = 20_000;

interface Opened {
  name: string;
  close: () => unknown;
}

/**
 * What start-up has opened so far, each with its close. `closeAll` closes them newest first, as
 * samples-typescript's `run()` does: each close is bounded in time, and one that fails or overruns is
 * a warn line, never an exception, so every other still closes. Each is closed once.
 */
export class Resources {
  private readonly opened: Opened[] = [];

  constructor(
    private readonly log: Logger,
    private readonly boundMs = CLOSE_BOUND_MS,
  ) {}

  /** Registers a resource just opened; `close` may be synchronous or return a promise. */
  add(name: string, close: () => unknown): void {
    this.opened.push({ name, close });
  }

  /** Closes every registered resource, last-in first-out. */
  async closeAll(): Promise<void> {
    for (let resource = this.opened.pop(); resource; resource = this.opened.pop()) {
      await this.closeOne(resource);
    }
  }

  private async closeOne({ name, close }: Opened): Promise<void> {
    // A close that overruns keeps running; a late failure is logged like any other.
    const closing = Promise.resolve()
      .then(close)
      .then(
        () => 'closed' as const,
        (error: unknown) => {
          this.log.warn({ resource: name, err: (error as Error).message }, `closing ${name} failed`);
          return 'failed' as const;
        },
      );
    const outcome = await pTimeout(closing, {
      milliseconds: this.boundMs,
      fallback: () => 'overran' as const,
    });
    if (outcome === 'overran')
      this.log.warn({ resource: name, afterMs: this.boundMs }, `${name} still closing; closing the rest`);
  }
}
