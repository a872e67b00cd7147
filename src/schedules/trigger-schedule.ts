// npm run schedule:trigger -- [--schedule-id ID]
// Runs the schedule's action now, even while another run is waiting for its minute (ALLOW_ALL):
// every sync writes a complete, current set, so an extra run is harmless.
import { scheduleFromArgs } from './connect.js';

const { handle, scheduleId, close } = await scheduleFromArgs();
await handle.trigger('ALLOW_ALL');
console.log(`triggered ${scheduleId}`);
await close();
