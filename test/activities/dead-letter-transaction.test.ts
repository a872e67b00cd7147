import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { describe, expect, it } from 'vitest';
import { createDeadLetterTransaction } from '../../src/activities/dead-letter-transaction.js';
import { createMetrics } from '../../src/metrics.js';
import { activityLogger, type LogLine } from '../support/activity-logger.js';
import {
  REASON_CODE_HEADER,
  REASON_HEADER,
  WORKFLOW_ID_HEADER,
  type DeadLetterPublisher,
} from '../../src/rabbitmq/dead-letters.js';

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

/** A publisher that records what it was asked to publish. */
function recordingPublisher() {
  const published: { body: Buffer; options: Record<string, unknown> }[] = [];
  const publisher: DeadLetterPublisher = {
    publish: (body, options) => {
      published.push({ body, options: options as Record<string, unknown> });
      return Promise.resolve();
    },
    accepting: () => true,
    close: () => Promise.resolve(),
  };
  return { publisher, published };
}

describe('deadLetterTransaction', () => {
  it('publishes the original bytes, properties and headers with the reason and the workflow, and counts it', async () => {
    const metrics = createMetrics();
    const { publisher, published } = recordingPublisher();
    const body = Buffer.from('{"id": 9, "value": "1€"}', 'utf8');
    await new MockActivityEnvironment().run(createDeadLetterTransaction(publisher, metrics), {
      ...input,
      original: {
        bodyBase64: body.toString('base64'),
        properties: { messageId: 'm-9', contentType: 'application/json' },
        headers: { 'x-producer': 'fxc' },
      },
    });
    expect(published).toHaveLength(1);
    expect(published[0]!.body.equals(body)).toBe(true);
    expect(published[0]!.options).toMatchObject({
      messageId: 'm-9',
      contentType: 'application/json',
      headers: {
        'x-producer': 'fxc',
        [REASON_CODE_HEADER]: 'unknown_provider',
        [REASON_HEADER]: 'provider id 9 is not in initial_data',
        [WORKFLOW_ID_HEADER]: 'ingest-x',
      },
    });
    expect((await metrics.messagesDeadLettered.get()).values).toEqual([
      { labels: { code: 'unknown_provider' }, value: 1 },
    ]);
  });

  it('fails as retryable NoPublisher on a worker without a dead-letter publisher', async () => {
    const failure = await new MockActivityEnvironment(undefined, { logger: activityLogger() })
      .run(createDeadLetterTransaction(undefined, createMetrics()), input)
      .catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(ApplicationFailure);
    expect(failure).toMatchObject({
      type: 'NoPublisher',
      nonRetryable: false,
      message: 'this worker has no dead-letter publisher',
    });
  });

  it('counts a refused dead letter and fails the attempt, so Temporal retries it', async () => {
    const metrics = createMetrics();
    const refusing: DeadLetterPublisher = {
      publish: () => Promise.reject(new Error('message nacked')),
      accepting: () => false,
      close: () => Promise.resolve(),
    };
    const errors: LogLine[] = [];
    const env = new MockActivityEnvironment(undefined, { logger: activityLogger({ error: errors }) });
    await expect(env.run(createDeadLetterTransaction(refusing, metrics), input)).rejects.toThrow(
      'message nacked',
    );
    expect(errors).toEqual([
      [
        'cannot publish a dead letter after the ack; retrying',
        expect.objectContaining({ code: 'unknown_provider', err: 'message nacked' }),
      ],
    ]);
    const failures = await metrics.deadLetterPublishFailures.get();
    expect(failures.values).toEqual([{ labels: { code: 'unknown_provider' }, value: 1 }]);
    expect((await metrics.messagesDeadLettered.get()).values).toEqual([]);
  });
});
