// npm run schedule:pause -- [--schedule-id ID] [--reason TEXT]
import { runScheduleCommand } from './connect.js';

runScheduleCommand({
  name: 'schedule:pause',
  summary: 'Pauses the schedule: no new runs start until it is unpaused. Start-up never unpauses it.',
  options: { reason: { type: 'string', help: 'note stored on the schedule (shown by schedule:describe)' } },
  async run({ handle, scheduleId, values }) {
    await handle.pause(values.reason ?? 'paused with npm run schedule:pause');
    return `paused ${scheduleId}`;
  },
});
