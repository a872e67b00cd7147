import type { ScheduleDescription } from '@temporalio/client';

/** A warn line stays one readable line: at most this many differences, each value cut to this length. */
const MAX_DIFFERENCES = 8;
const MAX_VALUE_LENGTH = 60;

/**
 * What differs in the spec, action and policies of two descriptions of a schedule, one
 * `path before → after` per field, e.g. `spec.calendars[0].minute 0-59/2 → 0-59`. The state (paused,
 * note) and the app's stamp are left out.
 */
export function scheduleDifferences(before: ScheduleDescription, after: ScheduleDescription): string[] {
  const [was, is] = [owned(before), owned(after)];
  const paths = [...new Set([...was.keys(), ...is.keys()])];
  const differences = paths
    .filter((path) => was.get(path) !== is.get(path) && !(unset(was.get(path)) && unset(is.get(path))))
    .map((path) => `${path} ${was.get(path) ?? '(none)'} → ${is.get(path) ?? '(none)'}`);
  return differences.length > MAX_DIFFERENCES
    ? [...differences.slice(0, MAX_DIFFERENCES), `and ${differences.length - MAX_DIFFERENCES} more`]
    : differences;
}

/** A protobuf field at its default reads the same as one not set: `0`, `""`, `false`, `[]`, `{}`. */
const unset = (text: string | undefined) =>
  text === undefined || ['0', '""', 'false', '[]', '{}'].includes(text);

function owned({ spec, action, policies }: ScheduleDescription): Map<string, string> {
  const fields = new Map<string, string>();
  flatten({ spec, action: { ...action, staticDetails: undefined }, policies }, '', fields);
  return fields;
}

type Range = { start: number | string; end: number | string; step: number };

const isRanges = (value: unknown[]): value is Range[] =>
  value.length > 0 && value.every((item) => typeof item === 'object' && item !== null && 'start' in item);

/** Calendar ranges as cron writes them: `55`, `0-59`, `0-59/2`, `MONDAY-FRIDAY`. */
const rangesText = (ranges: Range[]) =>
  ranges
    .map(({ start, end, step }) => `${start}${end !== start ? `-${end}` : ''}${step > 1 ? `/${step}` : ''}`)
    .join(',');

function flatten(value: unknown, path: string, into: Map<string, string>): void {
  if (value === undefined) return;
  if (Array.isArray(value) && isRanges(value)) {
    into.set(path, rangesText(value));
  } else if (Array.isArray(value)) {
    if (value.length === 0) into.set(path, '[]');
    value.forEach((item, index) => flatten(item, `${path}[${index}]`, into));
  } else if (value !== null && typeof value === 'object' && !(value instanceof Date)) {
    const entries = Object.entries(value).filter(([, item]) => item !== undefined);
    if (entries.length === 0) into.set(path, '{}');
    for (const [key, item] of entries) flatten(item, path ? `${path}.${key}` : key, into);
  } else {
    const text =
      value instanceof Date
        ? value.toISOString()
        : ((JSON.stringify(value) as string | undefined) ?? typeof value);
    into.set(path, text.length > MAX_VALUE_LENGTH ? `${text.slice(0, MAX_VALUE_LENGTH - 1)}…` : text);
  }
}
