import type { Logger } from '@temporalio/common';

/** What an activity logged: message and attributes. */
export type LogLine = [message: string, meta: Record<string, unknown> | undefined];

/**
 * A logger for MockActivityEnvironment that drops every line (the SDK's default prints activity
 * failures), except the warnings and errors it is given arrays to collect them in.
 */
export function activityLogger(collect: { warn?: LogLine[]; error?: LogLine[] } = {}): Logger {
  const drop = () => undefined;
  const into = (lines: LogLine[] | undefined) =>
    lines ? (message: string, meta?: Record<string, unknown>) => void lines.push([message, meta]) : drop;
  return {
    log: drop,
    trace: drop,
    debug: drop,
    info: drop,
    warn: into(collect.warn),
    error: into(collect.error),
  };
}
