import { DefaultLogger, type LogLevel } from '@temporalio/worker';
import pino, { type Logger } from 'pino';

/** Structured JSON logs on stdout. Callers never pass credentials: URLs go through redactUrl. */
export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'balance-sync' } });
}

const temporalToPino: Record<LogLevel, 'trace' | 'debug' | 'info' | 'warn' | 'error'> = {
  TRACE: 'trace',
  DEBUG: 'debug',
  INFO: 'info',
  WARN: 'warn',
  ERROR: 'error',
};

/**
 * SDK warnings that this app's design causes on purpose, logged at info: each instance's writer
 * worker (activities only, on a task queue of its own) polls no workflow tasks.
 */
const EXPECTED_WARNINGS = [/^No workflows registered, not polling for workflow tasks/];

/** Routes the Temporal SDK's own logs (worker, workflow `log`, activity `log`) into pino. */
export function temporalLogger(log: Logger, level: LogLevel = 'INFO'): DefaultLogger {
  return new DefaultLogger(level, ({ level: entryLevel, message, meta }) => {
    const expected = entryLevel === 'WARN' && EXPECTED_WARNINGS.some((pattern) => pattern.test(message));
    log[expected ? 'info' : temporalToPino[entryLevel]]({ ...meta, source: 'temporal' }, message);
  });
}
