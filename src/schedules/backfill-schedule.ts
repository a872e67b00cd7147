// npm run schedule:backfill -- --start 2026-01-01T10:00:00Z --end 2026-01-01T10:05:00Z [--schedule-id ID]
// Runs the action once for every tick in [start, end). A sync writes current balances, so backfilling
// the sync is a way to re-publish now; it is most useful for reconcile-balances.
import { scheduleFromArgs } from './connect.js';

const { handle, scheduleId, values, close } = await scheduleFromArgs({
  start: { type: 'string' },
  end: { type: 'string' },
});
const start = new Date(String(values.start));
const end = new Date(String(values.end));
if (Number.isNaN(start.getTime()) || Number.isNaN(end.getTime()) || start >= end) {
  console.error('--start and --end must be ISO times with start < end');
  process.exit(2);
}
await handle.backfill({ start, end, overlap: 'ALLOW_ALL' });
console.log(`backfilled ${scheduleId} from ${start.toISOString()} to ${end.toISOString()}`);
await close();
