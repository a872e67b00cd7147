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
 * An SDK warning that this app's design causes on purpose, logged at info: each instance's writer
 * worker (activities only, on its task queue `…/instance-<uuid>`) polls no workflow tasks. The same
 * warning from any other worker (one built without its workflows) stays a warning.
 */
const expectedWarning = (message: string, meta: Record<string, unknown> | undefined) =>
  message.startsWith('No workflows registered, not polling for workflow tasks') &&
  typeof meta?.taskQueue === 'string' &&
  /\/instance-[0-9a-f-]+$/.test(meta.taskQueue);

/** Routes the Temporal SDK's own logs (worker, workflow `log`, activity `log`) into pino. */
export function temporalLogger(log: Logger, level: LogLevel = 'INFO'): DefaultLogger {
  return new DefaultLogger(level, ({ level: entryLevel, message, meta }) => {
    const expected = entryLevel === 'WARN' && expectedWarning(message, meta);
    log[expected ? 'info' : temporalToPino[entryLevel]]({ ...meta, source: 'temporal' }, message);
  });
}
