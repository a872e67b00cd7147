// npm run schedule:backfill -- --start 2026-01-01T10:00:00Z --end 2026-01-01T12:00:00Z [--schedule-id ID]
import { UsageError } from '../cli.js';
import { runScheduleCommand } from './connect.js';

/**
 * BUFFER_ALL, the same as `temporal schedule backfill --overlap-policy BufferAll` in the README:
 * every tick in the range runs, one after another, so two syncs (or two reconciliations) never
 * run at once. A sync publishes current balances, so backfilling it re-publishes now.
 */
const BACKFILL_OVERLAP = 'BUFFER_ALL';

const range = (values: { start?: string; end?: string }) =>
  [new Date(values.start ?? ''), new Date(values.end ?? '')] as const;

runScheduleCommand({
  name: 'schedule:backfill',
  summary:
    "Runs the schedule's action once for every tick in [start, end), one run at a time (overlap BUFFER_ALL,\n" +
    'as `temporal schedule backfill --overlap-policy BufferAll`). Most useful for reconcile-balances.',
  options: {
    start: { type: 'string', help: 'first time, ISO 8601 (e.g. 2026-01-01T10:00:00Z)' },
    end: { type: 'string', help: 'end time, exclusive, ISO 8601' },
  },
  check(values) {
    const [start, end] = range(values);
    if (Number.isNaN(start.getTime()) || Number.isNaN(end.getTime()) || start >= end) {
      throw new UsageError('--start and --end must be ISO times with start < end');
    }
  },
  async run({ handle, scheduleId, values }) {
    const [start, end] = range(values);
    await handle.backfill({ start, end, overlap: BACKFILL_OVERLAP });
    return `backfilled ${scheduleId} from ${start.toISOString()} to ${end.toISOString()} (overlap ${BACKFILL_OVERLAP})`;
  },
});
