import type { Logger } from 'pino';
import type { AppMetrics } from './metrics.js';

/** One readiness check: nothing (or undefined) when fine, else a short reason; a rejection is a reason too. */
export type Check = () => string | undefined | void | Promise<string | undefined | void>;

/** The dependencies that have a `balance_sync_dependency_up` series. */
export type Dependency = 'postgres' | 'keydb' | 'temporal' | 'rabbitmq';

export interface HealthOptions {
  /** How often every check runs. */
  intervalMs: number;
  /** A check that has not answered by then fails with "no answer within …". */
  timeoutMs: number;
}

export const DEFAULT_HEALTH_OPTIONS: HealthOptions = { intervalMs: 2_000, timeoutMs: 2_000 };

/** The last round of checks: each check's verdict, and why each failing one fails. */
export interface HealthState {
  checks: Record<string, boolean>;
  reasons: Record<string, string>;
}

export type Health = ReturnType<typeof createHealth>;

/**
 * Runs the readiness checks every `intervalMs`, each bounded by `timeoutMs`, and keeps the last
 * round's result: /readyz, the `balance_sync_dependency_up` gauge, the log lines and the sync watch
 * all read this one state, so they cannot disagree. A check going false is logged at warn with its
 * reason, and its recovery at info.
 */
export function createHealth(
  metrics: AppMetrics,
  log: Logger,
  options: HealthOptions = DEFAULT_HEALTH_OPTIONS,
) {
  const checks = new Map<string, { check: Check; dependency: Dependency | undefined }>();
  let state: HealthState | undefined;
  let timer: NodeJS.Timeout | undefined;
  let round: Promise<void> | undefined;
  let stopped = false;

  const verdict = async (check: Check): Promise<string | undefined> => {
    let timeout: NodeJS.Timeout | undefined;
    const late = new Promise<string>((resolve) => {
      timeout = setTimeout(
        () => resolve(`no answer within ${options.timeoutMs / 1000} s`),
        options.timeoutMs,
      );
    });
    try {
      const outcome = await Promise.race([Promise.resolve().then(check), late]);
      return typeof outcome === 'string' ? outcome : undefined;
    } catch (error) {
      return (error as Error).message || String(error);
    } finally {
      clearTimeout(timeout);
    }
  };

  const refresh = async () => {
    const names = [...checks.keys()];
    const outcomes = await Promise.all(names.map((name) => verdict(checks.get(name)!.check)));
    const next: HealthState = { checks: {}, reasons: {} };
    names.forEach((name, i) => {
      const reason = outcomes[i];
      next.checks[name] = reason === undefined;
      if (reason !== undefined) next.reasons[name] = reason;
      const dependency = checks.get(name)!.dependency;
      if (dependency) metrics.dependencyUp.set({ dependency }, reason === undefined ? 1 : 0);
      const was = state?.reasons[name];
      if (reason !== undefined && was === undefined)
        log.warn({ check: name, reason }, `not ready: ${name}: ${reason}`);
      if (reason === undefined && state && !state.checks[name] && name in state.checks)
        log.info({ check: name }, `ready again: ${name}`);
    });
    state = next;
  };

  const loop = () => {
    round = refresh().finally(() => {
      if (!stopped) timer = setTimeout(loop, options.intervalMs);
    });
  };

  return {
    /** Adds a check; `dependency` also gives it a `balance_sync_dependency_up` series. */
    add(name: string, check: Check, dependency?: Dependency) {
      checks.set(name, { check, dependency });
    },
    /** Runs the first round, then keeps running them every `intervalMs`. */
    async start() {
      loop();
      await round;
    },
    /** The last round's result; undefined before the first round ends. */
    state: (): HealthState | undefined => state,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await round;
    },
  };
}
