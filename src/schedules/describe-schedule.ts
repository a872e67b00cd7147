// npm run schedule:describe -- [--schedule-id ID]
import { scheduleFromArgs } from './connect.js';

const { handle, close } = await scheduleFromArgs();
const description = await handle.describe();
console.log(
  JSON.stringify(
    {
      scheduleId: description.scheduleId,
      paused: description.state.paused,
      note: description.state.note,
      spec: description.spec,
      policies: description.policies,
      nextActionTimes: description.info.nextActionTimes.slice(0, 3),
      recentActions: description.info.recentActions.slice(-5).map((action) => ({
        scheduledAt: action.scheduledAt,
        takenAt: action.takenAt,
        workflowId: action.action.workflow.workflowId,
      })),
      runningActions: description.info.runningActions.map((action) => action.workflow.workflowId),
    },
    null,
    2,
  ),
);
await close();
