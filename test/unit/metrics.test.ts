import { describe, expect, it } from 'vitest';
import { createMetrics } from '../../src/metrics.js';

describe('the app metrics', () => {
  it('exports process and Node.js metrics under one balance_sync_ prefix', async () => {
    const text = await createMetrics().registry.metrics();
    const names = [...text.matchAll(/^# TYPE (\S+)/gm)].map((match) => match[1]!);
    expect(names).toContain('balance_sync_process_cpu_seconds_total');
    expect(names).toContain('balance_sync_process_resident_memory_bytes');
    expect(names).toContain('balance_sync_nodejs_eventloop_lag_seconds');
    expect(names).toContain('balance_sync_messages_consumed_total');
    expect(names.every((name) => name.startsWith('balance_sync_'))).toBe(true);
    expect(names.filter((name) => /(process|nodejs)_(process|nodejs)_/.test(name))).toEqual([]);
  });

  it('exports the schedule counters at 0 for both schedules before any increment, so increase() sees the first', async () => {
    const text = await createMetrics().registry.metrics();
    for (const name of ['recreated', 'restored', 'restore_failures', 'stamp_renewed'])
      for (const schedule of ['sync', 'reconcile'])
        expect(text).toContain(`balance_sync_sync_schedule_${name}_total{schedule="${schedule}"} 0\n`);
  });
});
