// npm run schedule:trigger -- [--schedule-id ID]
import { runScheduleCommand } from './connect.js';

runScheduleCommand({
  name: 'schedule:trigger',
  // ALLOW_ALL: every sync writes a complete, current set, so an extra run is harmless.
  summary:
    "Runs the schedule's action now, even while another run is waiting for its minute (overlap ALLOW_ALL).\n" +
    'A sync run publishes current balances at once.',
  async run({ handle, scheduleId }) {
    await handle.trigger('ALLOW_ALL');
    return `triggered ${scheduleId}`;
  },
});
