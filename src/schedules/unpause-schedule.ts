// npm run schedule:unpause -- [--schedule-id ID] [--reason TEXT]
import { runScheduleCommand } from './connect.js';

runScheduleCommand({
  name: 'schedule:unpause',
  summary: 'Unpauses the schedule: runs start again at the next tick.',
  options: { reason: { type: 'string', help: 'note stored on the schedule (shown by schedule:describe)' } },
  async run({ handle, scheduleId, values }) {
    await handle.unpause(values.reason ?? 'unpaused with npm run schedule:unpause');
    return `unpaused ${scheduleId}`;
  },
});
