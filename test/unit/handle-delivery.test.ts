import type { Client } from '@temporalio/client';
import type { ConfirmChannel, ConsumeMessage } from 'amqplib';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it, vi } from 'vitest';
import { DeliveryHandler, REQUEUED_HEADER, type DeliveryDeps } from '../../src/bridge/handle-delivery.js';
import type { ProviderDirectory } from '../../src/bridge/provider-directory.js';
import { createMetrics } from '../../src/metrics.js';
import {
  ConfirmTimeoutError,
  decodeHeaders,
  encodeHeaders,
  WORKFLOW_ID_HEADER,
  type DeadLetterPublisher,
} from '../../src/rabbitmq/dead-letters.js';
import { silentLog } from '../support/harness.js';

/** A delivery of `body`, with optional properties. */
function delivery(body: string, properties: Record<string, unknown> = {}): ConsumeMessage {
  return {
    content: Buffer.from(body),
    fields: { deliveryTag: 1, redelivered: false, exchange: '', routingKey: 'q', consumerTag: 'c' },
    properties: { headers: {}, ...properties },
  } as unknown as ConsumeMessage;
}

/** A handler on fakes: starts (by workflow ID) and settlements are recorded. */
function handlerWith(overrides: Partial<DeliveryDeps> & { maxHoldMs?: number; copyBoundMs?: number } = {}) {
  const starts: string[] = [];
  const settled: string[] = [];
  const published: Record<string, unknown>[] = [];
  const copies: Record<string, unknown>[] = [];
  const metrics = createMetrics();
  const client = {
    withDeadline: (_deadline: number, fn: () => Promise<unknown>) => fn(),
    workflow: {
      start: (_type: string, options: { workflowId: string }) => {
        starts.push(options.workflowId);
        return Promise.resolve({ eagerlyStarted: true });
      },
    },
  } as unknown as Client;
  const deadLetters: DeadLetterPublisher = {
    publish: (_body, options) => {
      published.push(options.headers as Record<string, unknown>);
      return Promise.resolve();
    },
    accepting: () => true,
    close: () => Promise.resolve(),
  };
  const requeueCopies: DeadLetterPublisher = {
    publish: (_body, options) => {
      copies.push(options.headers as Record<string, unknown>);
      settled.push('copy');
      return Promise.resolve();
    },
    accepting: () => true,
    close: () => Promise.resolve(),
  };
  const channel = {
    ack: () => settled.push('ack'),
    nack: () => settled.push('requeue'),
  } as unknown as ConfirmChannel;
  const handler = new DeliveryHandler(
    {
      deadLetterQueue: 'q.dead',
      maxMessageBytes: 65536,
      taskQueue: 'tq',
      eagerStart: false,
      maxHoldMs: overrides.maxHoldMs,
      copyBoundMs: overrides.copyBoundMs,
    },
    {
      client,
      deadLetters,
      requeueCopies,
      providers: { has: () => Promise.resolve(true) } as unknown as ProviderDirectory,
      startsAllowed: () => Promise.resolve(),
      onStarted: () => undefined,
      metrics,
      log: silentLog(),
      draining: new AbortController().signal,
      stopping: new AbortController().signal,
      onDeadLetterOutcome: () => undefined,
      ...overrides,
    },
  );
  const sample = async (
    name: 'deliveriesReleased' | 'messagesRequeued' | 'possibleDuplicates' | 'workflowStarts',
    label: string,
  ) => (await metrics[name].get()).values.find((v) => Object.values(v.labels).includes(label))?.value ?? 0;
  return { handler, channel, starts, settled, published, copies, sample };
}

/** Resolves never; rejects when `signal` aborts (a closed gate: throttle closed or Temporal down). */
const closedGate = (signal: AbortSignal) =>
  new Promise<void>((_, reject) => signal.addEventListener('abort', () => reject(signal.reason as Error)));

describe('DeliveryHandler: how a new run reached the worker', () => {
  it('counts each new run as eager or task_queue, as the start reply says', async () => {
    let eagerly = true;
    const client = {
      withDeadline: (_deadline: number, fn: () => Promise<unknown>) => fn(),
      workflow: { start: () => Promise.resolve({ eagerlyStarted: eagerly }) },
    } as unknown as Client;
    const { handler, channel, settled, sample } = handlerWith({ client });
    await handler.handle(channel, delivery('{"id": 1, "value": 5}'), new AbortController().signal);
    eagerly = false;
    await handler.handle(channel, delivery('{"id": 1, "value": 6}'), new AbortController().signal);
    expect(settled).toEqual(['ack', 'ack']);
    expect(await sample('workflowStarts', 'eager')).toBe(1);
    expect(await sample('workflowStarts', 'task_queue')).toBe(1);
  });
});

describe('DeliveryHandler: a delivery whose channel closes', () => {
  it('never starts a workflow once its channel closed while it waited at the gate; released and counted', async () => {
    const { handler, channel, starts, settled, sample } = handlerWith({ startsAllowed: closedGate });
    const closed = new AbortController();
    const handled = handler.handle(channel, delivery('{"id": 1, "value": 5}'), closed.signal);
    closed.abort(new Error('the channel closed'));
    // Let go at once, not at the hold bound (30 s).
    const outcome = await Promise.race([handled.then(() => 'released'), sleep(2_000, 'still held')]);
    expect(outcome).toBe('released');
    expect(starts).toEqual([]);
    expect(settled).toEqual([]);
    expect(await sample('deliveriesReleased', 'channel_closed')).toBe(1);
  });

  it('checks the channel right before the start call: closed during the provider check, nothing starts', async () => {
    const closed = new AbortController();
    const { handler, channel, starts, sample } = handlerWith({
      providers: {
        has: () => {
          closed.abort(new Error('the channel closed'));
          return Promise.resolve(true);
        },
      } as unknown as ProviderDirectory,
    });
    await handler.handle(channel, delivery('{"id": 1, "value": 5}'), closed.signal);
    expect(starts).toEqual([]);
    expect(await sample('deliveriesReleased', 'channel_closed')).toBe(1);
  });

  it('requeues a delivery held at a closed gate longer than the hold bound', async () => {
    const { handler, channel, starts, settled, sample } = handlerWith({
      startsAllowed: closedGate,
      maxHoldMs: 100,
    });
    await handler.handle(channel, delivery('{"id": 1, "value": 5}'), new AbortController().signal);
    expect(starts).toEqual([]);
    expect(settled).toEqual(['requeue']);
    expect(await sample('messagesRequeued', 'held_too_long')).toBe(1);
  });
});

describe('DeliveryHandler: a message without message_id whose start was sent, handed back', () => {
  /** Starts are recorded, then fail as an unanswered start does (deadline exceeded, an outage). */
  const lostReplies = (starts: string[]) =>
    ({
      withDeadline: (_deadline: number, fn: () => Promise<unknown>) => fn(),
      workflow: {
        start: (_type: string, options: { workflowId: string }) => {
          starts.push(options.workflowId);
          return Promise.reject(Object.assign(new Error('Deadline exceeded'), { code: 4 }));
        },
      },
    }) as unknown as Client;

  it(`goes back as a confirmed copy carrying its workflow ID (${WORKFLOW_ID_HEADER}), then the original is acked`, async () => {
    const starts: string[] = [];
    const { handler, channel, settled, copies, sample } = handlerWith({
      client: lostReplies(starts),
      maxHoldMs: 300,
    });
    await handler.handle(channel, delivery('{"id": 1, "value": 5}'), new AbortController().signal);
    expect(starts.length).toBeGreaterThan(0);
    expect(new Set(starts).size).toBe(1);
    expect(settled).toEqual(['copy', 'ack']);
    expect(copies[0]?.[WORKFLOW_ID_HEADER]).toBe(starts[0]);
    expect(copies[0]?.[REQUEUED_HEADER]).toBe('held_too_long');
    expect(await sample('messagesRequeued', 'held_too_long')).toBe(1);
    expect(await sample('possibleDuplicates', 'copy_refused')).toBe(0);
  });

  it('starts the copy under the same workflow ID, and dead-letters it when it fails unexpectedly again (no loop)', async () => {
    const starts: string[] = [];
    const failing = {
      withDeadline: (_deadline: number, fn: () => Promise<unknown>) => fn(),
      workflow: {
        start: (_type: string, options: { workflowId: string }) => {
          starts.push(options.workflowId);
          return Promise.reject(new TypeError('a bug'));
        },
      },
    } as unknown as Client;
    const first = handlerWith({ client: failing });
    await first.handler.handle(
      first.channel,
      delivery('{"id": 1, "value": 5}'),
      new AbortController().signal,
    );
    expect(first.settled).toEqual(['copy', 'ack']);
    const copy = delivery('{"id": 1, "value": 5}', { headers: first.copies[0] });
    const second = handlerWith({ client: failing });
    await second.handler.handle(second.channel, copy, new AbortController().signal);
    expect(new Set(starts)).toEqual(new Set([starts[0]]));
    expect(second.published[0]?.['x-balance-sync-reason-code']).toBe('processing_error');
    expect(second.settled).toEqual(['ack']);
  });

  it('retries a refused copy, and is requeued plainly, counted as a possible duplicate, only past its bound', async () => {
    const starts: string[] = [];
    let copies = 0;
    const { handler, channel, settled, sample } = handlerWith({
      client: lostReplies(starts),
      maxHoldMs: 300,
      copyBoundMs: 1_000,
      requeueCopies: {
        publish: () => {
          copies++;
          return Promise.reject(new Error('NO_ROUTE'));
        },
        accepting: () => false,
        close: () => Promise.resolve(),
      },
    });
    await handler.handle(channel, delivery('{"id": 1, "value": 5}'), new AbortController().signal);
    expect(copies).toBeGreaterThan(3);
    expect(settled).toEqual(['requeue']);
    expect(await sample('possibleDuplicates', 'copy_refused')).toBe(1);
  });

  it('counts a copy the broker never confirmed as copy_unconfirmed (it may still be kept)', async () => {
    const starts: string[] = [];
    const { handler, channel, settled, sample } = handlerWith({
      client: lostReplies(starts),
      maxHoldMs: 300,
      copyBoundMs: 300,
      requeueCopies: {
        publish: () => Promise.reject(new ConfirmTimeoutError('no publisher confirm within 10 ms')),
        accepting: () => false,
        close: () => Promise.resolve(),
      },
    });
    await handler.handle(channel, delivery('{"id": 1, "value": 5}'), new AbortController().signal);
    expect(settled).toEqual(['requeue']);
    expect(await sample('possibleDuplicates', 'copy_unconfirmed')).toBe(1);
  });

  it('goes back as a copy with its workflow ID when shutdown stops a start left unanswered', async () => {
    const starts: string[] = [];
    const stopping = new AbortController();
    const { handler, channel, settled, copies } = handlerWith({
      client: lostReplies(starts),
      draining: stopping.signal,
      stopping: stopping.signal,
    });
    const handled = handler.handle(channel, delivery('{"id": 1, "value": 5}'), new AbortController().signal);
    await vi.waitFor(() => expect(starts.length).toBeGreaterThan(0));
    stopping.abort(new Error('shutting down'));
    await handled;
    expect(settled).toEqual(['copy', 'ack']);
    expect(copies[0]?.[WORKFLOW_ID_HEADER]).toBe(starts[0]);
  });

  it('with a message_id, is requeued as it is (its workflow ID comes from the message_id)', async () => {
    const starts: string[] = [];
    const { handler, channel, settled, copies } = handlerWith({
      client: lostReplies(starts),
      maxHoldMs: 300,
    });
    await handler.handle(
      channel,
      delivery('{"id": 1, "value": 5}', { messageId: 'm-1' }),
      new AbortController().signal,
    );
    expect(starts[0]).toBe('ingest-m-1');
    expect(copies).toEqual([]);
    expect(settled).toEqual(['requeue']);
  });
});

describe('DeliveryHandler: dead letters and replayed workflow IDs', () => {
  it('requeues (not holds) a dead letter the broker does not confirm in time, counted as confirm_timeout', async () => {
    const { handler, channel, settled, sample } = handlerWith({
      deadLetters: {
        publish: () => Promise.reject(new ConfirmTimeoutError('no publisher confirm within 10 ms')),
        accepting: () => false,
        close: () => Promise.resolve(),
      },
    });
    await handler.handle(channel, delivery('not json'), new AbortController().signal);
    expect(settled).toEqual(['requeue']);
    expect(await sample('messagesRequeued', 'confirm_timeout')).toBe(1);
  });

  it('gives an unconfirmed dead letter of a message without message_id and the copy handed back one workflow ID', async () => {
    const attempts: Record<string, unknown>[] = [];
    const { handler, channel, settled, copies } = handlerWith({
      providers: { has: () => Promise.resolve(false) } as unknown as ProviderDirectory,
      deadLetters: {
        publish: (_body, options) => {
          attempts.push(options.headers as Record<string, unknown>);
          return Promise.reject(new ConfirmTimeoutError('no publisher confirm within 10 ms'));
        },
        accepting: () => false,
        close: () => Promise.resolve(),
      },
    });
    await handler.handle(channel, delivery('{"id": 9, "value": 5}'), new AbortController().signal);
    const pinned = attempts[0]?.[WORKFLOW_ID_HEADER];
    expect(pinned).toMatch(/^ingest-anon-/);
    expect(copies[0]?.[WORKFLOW_ID_HEADER]).toBe(pinned);
    expect(settled).toEqual(['copy', 'ack']);
  });

  it(`starts a message without message_id under its ${WORKFLOW_ID_HEADER} header`, async () => {
    const { handler, channel, starts, settled } = handlerWith();
    const message = delivery('{"id": 1, "value": 5}', { headers: { [WORKFLOW_ID_HEADER]: 'ingest-anon-1' } });
    await handler.handle(channel, message, new AbortController().signal);
    expect(starts).toEqual(['ingest-anon-1']);
    expect(settled).toEqual(['ack']);
  });

  it(`dead-letters a ${WORKFLOW_ID_HEADER} header that is not one of ours, as invalid_workflow_id`, async () => {
    for (const bad of ['other-1', 42, `ingest-${'x'.repeat(300)}`]) {
      const { handler, channel, starts, published } = handlerWith();
      const message = delivery('{"id": 1, "value": 5}', { headers: { [WORKFLOW_ID_HEADER]: bad } });
      await handler.handle(channel, message, new AbortController().signal);
      expect(starts).toEqual([]);
      expect(published[0]?.['x-balance-sync-reason-code']).toBe('invalid_workflow_id');
    }
  });
});

describe('encodeHeaders / decodeHeaders', () => {
  it('round-trips every AMQP header value through JSON: byte arrays, arrays, nested tables, look-alike tables', () => {
    const headers = {
      text: 'a',
      count: 3,
      ratio: 1.5,
      flag: false,
      none: null,
      bytes: Buffer.from([0, 255, 10]),
      list: [1, 'two', Buffer.from('3'), { four: [4] }],
      table: { nested: { deeper: Buffer.from('x') }, n: 1 },
      lookalike: { $bytes: 'not base64, a producer value' },
      decimal: { '!': 'decimal', value: { places: 2, digits: 12345 } },
    };
    const through = JSON.parse(JSON.stringify(encodeHeaders(headers))) as Parameters<typeof decodeHeaders>[0];
    expect(decodeHeaders(through)).toEqual(headers);
  });

  it('decodes the scalar headers of inputs recorded before the encoding existed unchanged', () => {
    expect(decodeHeaders({ 'x-trace': 't-1', n: 2, ok: true })).toEqual({ 'x-trace': 't-1', n: 2, ok: true });
  });
});
