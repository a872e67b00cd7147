// npm run schedule:unpause -- [--schedule-id ID] [--reason TEXT]
import { scheduleFromArgs } from './connect.js';

const { handle, scheduleId, values, close } = await scheduleFromArgs({ reason: { type: 'string' } });
await handle.unpause((values.reason as string | undefined) ?? 'unpaused with npm run schedule:unpause');
console.log(`unpaused ${scheduleId}`);
await close();
