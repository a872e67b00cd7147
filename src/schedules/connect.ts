import { Client, Connection } from '@temporalio/client';
import { parseArgs } from 'node:util';
import { loadConfig } from '../config.js';
import { temporalConnectOptions } from '../temporal-connection.js';

/**
 * Shared by the one-operation schedule scripts: connects with the app's configuration and picks the
 * schedule from `--schedule-id` (default: SYNC_SCHEDULE_ID). Extra flags are returned as parsed.
 */
export async function scheduleFromArgs<T extends Record<string, { type: 'string' | 'boolean' }>>(
  extraOptions?: T,
) {
  const config = loadConfig();
  const { values } = parseArgs({
    options: { 'schedule-id': { type: 'string' }, ...(extraOptions ?? {}) },
    strict: true,
  });
  const { connectionOptions, namespace } = temporalConnectOptions(config);
  const connection = await Connection.connect({
    address: connectionOptions.address,
    tls: connectionOptions.tls,
    apiKey: connectionOptions.apiKey,
    metadata: connectionOptions.metadata,
  });
  const client = new Client({ connection, namespace });
  const scheduleId = values['schedule-id'] ?? config.SYNC_SCHEDULE_ID;
  return {
    handle: client.schedule.getHandle(scheduleId),
    scheduleId,
    values: values as Record<string, string | boolean | undefined>,
    close: () => connection.close(),
  };
}
