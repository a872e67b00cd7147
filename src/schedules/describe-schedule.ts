// npm run schedule:describe -- [--schedule-id ID]
import { runScheduleCommand } from './connect.js';

runScheduleCommand({
  name: 'schedule:describe',
  summary:
    'Prints the schedule as JSON: paused (and why), spec, policies, the next three and the last five actions.',
  async run({ handle }) {
    const description = await handle.describe();
    return JSON.stringify(
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
    );
  },
});
