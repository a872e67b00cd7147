import { CronExpressionParser } from 'cron-parser';

const MACROS = new Set(['@yearly', '@annually', '@monthly', '@weekly', '@daily', '@midnight', '@hourly']);

/**
 * Why `expression` is not a cron string that Temporal's schedule parser and cron-parser read the
 * same way, or undefined when it is. Accepted: five fields (minute hour day-of-month month
 * day-of-week) made of numbers, month and weekday names, `*`, `,`, `-` and `/`; or one of the
 * macros @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually. Temporal also takes
 * 6- and 7-field forms, `@every`, `TZ=` and `#` comments, which other parsers read differently or
 * not at all (and the schedule's time zone is UTC), so they are refused here rather than guessed.
 */
export function cronProblem(expression: string): string | undefined {
  const trimmed = expression.trim();
  if (MACROS.has(trimmed)) return undefined;
  const fields = trimmed.split(/\s+/);
  if (fields.length !== 5) {
    return `must be a 5-field cron expression (minute hour day-of-month month day-of-week) or @hourly/@daily/@weekly/@monthly/@yearly, got ${fields.length} field(s)`;
  }
  // cron-parser extensions Temporal does not parse.
  const extension = /[?LW#H]/.exec(
    fields
      .join(' ')
      .toUpperCase()
      .replace(/[A-Z]{3,}/g, ''),
  );
  if (extension) return `"${extension[0]}" is not supported (use numbers, names, *, ",", "-" and "/")`;
  try {
    CronExpressionParser.parse(trimmed, { tz: 'UTC' });
    return undefined;
  } catch (error) {
    return `is not a valid cron expression (${(error as Error).message})`;
  }
}
