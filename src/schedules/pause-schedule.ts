// npm run schedule:pause -- [--schedule-id ID] [--reason TEXT]
import { scheduleFromArgs } from './connect.js';

const { handle, scheduleId, values, close } = await scheduleFromArgs({ reason: { type: 'string' } });
await handle.pause((values.reason as string | undefined) ?? 'paused with npm run schedule:pause');
console.log(`paused ${scheduleId}`);
await close();
