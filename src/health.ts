import pTimeout from 'p-timeout';
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
 * all read this one state, so they cannot disagree. A check that answers synchronously (an
 * in-process flag such as "consuming") is also re-read into the state whenever the state is read,
 * so it is never a round late. A check going false is logged at warn with its reason, and its
 * recovery at info; one failing on its first verdict (start-up) is said at info, and warned about
 * only if it still fails a round later.
 */
export function createHealth(
  metrics: AppMetrics,
  log: Logger,
  options: HealthOptions = DEFAULT_HEALTH_OPTIONS,
) {
  type Entry = { check: Check; dependency: Dependency | undefined; synchronous?: boolean };
  const checks = new Map<string, Entry>();
  let state: HealthState | undefined;
  let timer: NodeJS.Timeout | undefined;
  let round: Promise<void> | undefined;
  let stopped = false;
  /**
   * Checks failing on their first verdict (start-up: the consumer starts a moment after the checks),
   * and since when: said at info, and at warn only if still failing a round later.
   */
  const starting = new Map<string, number>();

  const reasonOf = (error: unknown) => (error as Error).message || String(error);

  const verdict = async (entry: Entry): Promise<string | undefined> => {
    let outcome: ReturnType<Check>;
    try {
      outcome = entry.check();
    } catch (error) {
      return reasonOf(error);
    }
    if (!(outcome instanceof Promise)) {
      entry.synchronous = true;
      return outcome ?? undefined;
    }
    try {
      return (
        (await pTimeout(outcome, {
          milliseconds: options.timeoutMs,
          fallback: () => `no answer within ${options.timeoutMs / 1000} s`,
        })) ?? undefined
      );
    } catch (error) {
      return reasonOf(error);
    }
  };

  /** Writes one check's verdict into the state, the gauge and (on a change) the log. */
  const record = (into: HealthState, name: string, reason: string | undefined) => {
    const wasReady = into.checks[name];
    into.checks[name] = reason === undefined;
    if (reason === undefined) delete into.reasons[name];
    else into.reasons[name] = reason;
    const dependency = checks.get(name)!.dependency;
    if (dependency) metrics.dependencyUp.set({ dependency }, reason === undefined ? 1 : 0);
    if (reason === undefined) {
      if (!starting.delete(name) && wasReady === false) log.info({ check: name }, `ready again: ${name}`);
    } else if (wasReady === undefined) {
      starting.set(name, Date.now());
      log.info({ check: name, reason }, `not ready yet: ${name}: ${reason}`);
    } else if (wasReady || Date.now() - (starting.get(name) ?? Infinity) >= options.intervalMs) {
      starting.delete(name);
      log.warn({ check: name, reason }, `not ready: ${name}: ${reason}`);
    }
  };

  const refresh = async () => {
    const names = [...checks.keys()];
    const outcomes = await Promise.all(names.map((name) => verdict(checks.get(name)!)));
    const next = state ?? { checks: {}, reasons: {} };
    names.forEach((name, i) => record(next, name, outcomes[i]));
    state = next;
  };

  /** The state, with the synchronous checks read again now. */
  const current = (): HealthState | undefined => {
    if (!state) return undefined;
    for (const [name, entry] of checks) {
      if (!entry.synchronous) continue;
      try {
        const outcome = entry.check();
        // A check that answered synchronously once but not now waits for the next round.
        if (outcome instanceof Promise) {
          entry.synchronous = false;
          outcome.catch(() => undefined);
        } else record(state, name, outcome ?? undefined);
      } catch (error) {
        record(state, name, reasonOf(error));
      }
    }
    return { checks: { ...state.checks }, reasons: { ...state.reasons } };
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
    /** The last round's result (synchronous checks read now); undefined before the first round ends. */
    state: current,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await round;
    },
  };
}
