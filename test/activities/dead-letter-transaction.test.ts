import { MockActivityEnvironment } from '@temporalio/testing';
import { describe, expect, it } from 'vitest';
import { createDeadLetterTransaction } from '../../src/activities/dead-letter-transaction.js';
import { createMetrics } from '../../src/metrics.js';
import type { DeadLetterPublisher } from '../../src/rabbitmq/dead-letters.js';

const input = {
  original: {
    bodyBase64: Buffer.from('{"id": 9, "value": 1}').toString('base64'),
    properties: {},
    headers: {},
  },
  code: 'unknown_provider',
  reason: 'provider id 9 is not in initial_data',
  workflowId: 'ingest-x',
};

describe('deadLetterTransaction', () => {
  it('counts a refused dead letter and fails the attempt, so Temporal retries it', async () => {
    const metrics = createMetrics();
    const refusing: DeadLetterPublisher = {
      publish: () => Promise.reject(new Error('message nacked')),
      accepting: () => false,
      close: () => Promise.resolve(),
    };
    const env = new MockActivityEnvironment();
    await expect(env.run(createDeadLetterTransaction(refusing, metrics), input)).rejects.toThrow(
      'message nacked',
    );
    const failures = await metrics.deadLetterPublishFailures.get();
    expect(failures.values).toEqual([{ labels: { code: 'unknown_provider' }, value: 1 }]);
    expect((await metrics.messagesDeadLettered.get()).values).toEqual([]);
  });
});
