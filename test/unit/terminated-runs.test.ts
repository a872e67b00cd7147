import type { Client } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import type pg from 'pg';
import type { Logger } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { watchTerminatedRuns, type SweepDependency } from '../../src/after-ack/terminated-runs.js';
import { createMetrics } from '../../src/metrics.js';
import type { DeadLetterPublisher } from '../../src/rabbitmq/dead-letters.js';

type Line = Record<string, unknown> & { level: string; msg: string };

/** What each fake dependency does; by default one terminated run is found and dead-lettered. */
interface Fakes {
  list?: (query: string) => Promise<{ workflowId: string; runId: string; closeTime?: Date }[]>;
  connect?: () => Promise<void>;
  fetchHistory?: (runId: string) => Promise<void>;
  publish?: () => Promise<void>;
}

/** A sweep every 15 s on fakes; the fakes can be swapped between sweeps through `fakes`. */
function sweepOn(fakes: Fakes) {
  const metrics = createMetrics();
  const lines: Line[] = [];
  const log = {
    warn: (fields: object, msg: string) => lines.push({ level: 'warn', ...fields, msg }),
    info: (fields: object, msg: string) => lines.push({ level: 'info', ...fields, msg }),
  } as unknown as Logger;
  const input = defaultPayloadConverter.toPayload({
    original: { bodyBase64: Buffer.from('{"id":1}').toString('base64'), properties: {}, headers: {} },
  });
  // How far ahead of each sweep's start its Temporal calls' deadline lies. The fake keeps no
  // deadline itself: its hung calls stay hung, as a call that ignored it would.
  const deadlines: number[] = [];
  const client = {
    withDeadline: (deadline: number, fn: () => Promise<unknown>) => {
      deadlines.push(deadline - Date.now());
      return fn();
    },
    workflow: {
      list: ({ query }: { query: string }) => ({
        async *[Symbol.asyncIterator]() {
          // The look for long-running runs to watch (vanished-runs.ts) finds none.
          if (query.includes(`'Running'`)) return;
          yield* await (fakes.list?.(query) ?? Promise.resolve([{ workflowId: 'ingest-1', runId: 'r1' }]));
        },
      }),
      getHandle: (_workflowId: string, runId: string) => ({
        fetchHistory: async () => {
          await fakes.fetchHistory?.(runId);
          return {
            events: [
              { workflowExecutionStartedEventAttributes: { input: { payloads: [input] } } },
              { workflowExecutionTerminatedEventAttributes: { reason: 'operator' } },
            ],
          };
        },
      }),
    },
  } as unknown as Client;
  const db = {
    // Every run is newly claimed and has no row: its message is to be dead-lettered.
    query: (sql: string) => Promise.resolve({ rowCount: sql.includes('INSERT') ? 1 : 0 }),
    release: () => undefined,
  };
  const pool = {
    // No run is watched (vanished-runs.ts).
    query: () => Promise.resolve({ rows: [], rowCount: 0 }),
    connect: async () => {
      await fakes.connect?.();
      return db;
    },
  } as unknown as pg.Pool;
  const publisher = {
    publish: () => fakes.publish?.() ?? Promise.resolve(),
  } as unknown as DeadLetterPublisher;
  const watch = watchTerminatedRuns({ taskQueue: 'tq' }, { client, pool, publisher, metrics, log });
  const failures = async () =>
    (await metrics.deadLetterPublishFailures.get()).values.find((v) => v.labels.code === 'terminated')
      ?.value ?? 0;
  const deadLettered = async () =>
    (await metrics.messagesDeadLettered.get()).values.find((v) => v.labels.code === 'terminated')?.value ?? 0;
  return { watch, lines, failures, deadLettered, deadlines };
}

const refuse = (message: string) => () => Promise.reject(new Error(message));
const never = () => new Promise<never>(() => undefined);
/** How the Temporal SDK's NativeConnection fails a call still unanswered at its deadline. */
const timesOutAt60s = () =>
  new Promise<never>((_, reject) => setTimeout(() => reject(new Error('Timeout expired')), 60_000));

describe('the terminated runs sweep', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('dead-letters a terminated run with code terminated and counts no failure', async () => {
    const { watch, failures, deadLettered, lines } = sweepOn({});
    await vi.advanceTimersByTimeAsync(0);
    await watch.stop();
    expect(await deadLettered()).toBe(1);
    expect(await failures()).toBe(0);
    expect(lines.filter((line) => line.level === 'warn').map((line) => line.msg)).toEqual([
      'terminated run dead-lettered',
    ]);
  });

  it('counts each failed sweep as code="terminated" and warns that temporal visibility has failed for 15 s', async () => {
    const fakes: Fakes = { list: refuse('visibility store unavailable') };
    const { watch, failures, lines } = sweepOn(fakes);
    await vi.advanceTimersByTimeAsync(0);
    expect(await failures()).toBe(1);
    await vi.advanceTimersByTimeAsync(15_000);
    expect(await failures()).toBe(2);
    expect(lines.at(-1)).toMatchObject({
      level: 'warn',
      code: 'terminated',
      dependency: 'temporal visibility',
      err: 'visibility store unavailable',
      failedSweeps: 2,
      failingForSeconds: 15,
      msg: 'cannot dead-letter terminated runs: temporal visibility failing for 15 s; retrying every 15 s',
    });

    delete fakes.list;
    await vi.advanceTimersByTimeAsync(15_000);
    await watch.stop();
    expect(await failures()).toBe(2);
    expect(lines.at(-1)).toMatchObject({
      level: 'info',
      failedSweeps: 2,
      msg: 'terminated runs are dead-lettered again',
    });
  });

  it.each<[SweepDependency, Fakes]>([
    ['postgres', { connect: refuse('connect ECONNREFUSED 127.0.0.1:5432') }],
    ['temporal history', { fetchHistory: refuse('14 UNAVAILABLE: no connection') }],
    ['rabbitmq', { publish: refuse('no publisher confirm within 10000 ms') }],
  ])('names %s when it fails the sweep, and counts it', async (dependency, fakes) => {
    const { watch, failures, deadLettered, lines } = sweepOn(fakes);
    await vi.advanceTimersByTimeAsync(0);
    await watch.stop();
    expect(await failures()).toBe(1);
    expect(await deadLettered()).toBe(0);
    expect(lines).toEqual([
      expect.objectContaining({
        level: 'warn',
        dependency,
        failingForSeconds: 0,
        msg: `cannot dead-letter terminated runs: ${dependency} failing for 0 s; retrying every 15 s`,
      }),
    ]);
  });

  it.each<[SweepDependency, Fakes]>([
    ['temporal visibility', { list: never }],
    ['temporal history', { fetchHistory: never }],
  ])(
    'fails a sweep that %s leaves unanswered for 60 s, counts it, and sweeps again 15 s later',
    async (dependency, fakes) => {
      const { watch, failures, deadLettered, lines, deadlines } = sweepOn(fakes);
      await vi.advanceTimersByTimeAsync(59_999);
      expect(await failures()).toBe(0);
      await vi.advanceTimersByTimeAsync(1);
      expect(await failures()).toBe(1);
      expect(lines.at(-1)).toMatchObject({
        level: 'warn',
        code: 'terminated',
        dependency,
        err: 'no answer within 60 s',
        failingForSeconds: 60,
        msg: `cannot dead-letter terminated runs: ${dependency} failing for 60 s; retrying every 15 s`,
      });

      delete fakes.list;
      delete fakes.fetchHistory;
      await vi.advanceTimersByTimeAsync(15_000);
      await watch.stop();
      expect(await failures()).toBe(1);
      expect(await deadLettered()).toBe(1);
      expect(lines.at(-1)).toMatchObject({ level: 'info', msg: 'terminated runs are dead-lettered again' });
      expect(deadlines).toEqual([60_000, 60_000]);
    },
  );

  it('re-reads from the last complete sweep when one fails part-way, not from the newest run it saw', async () => {
    const newest = new Date('2026-12-01T12:00:00Z');
    const hourOlder = new Date('2026-12-01T11:00:00Z');
    const queries: string[] = [];
    const fakes: Fakes = {
      list: (query) => {
        queries.push(query);
        return Promise.resolve([
          { workflowId: 'ingest-2', runId: 'r2', closeTime: newest },
          { workflowId: 'ingest-1', runId: 'r1', closeTime: hourOlder },
        ]);
      },
      fetchHistory: (runId) => (runId === 'r1' ? refuse('14 UNAVAILABLE')() : Promise.resolve()),
    };
    const { watch, failures } = sweepOn(fakes);
    await vi.advanceTimersByTimeAsync(0);
    expect(await failures()).toBe(1);

    delete fakes.fetchHistory;
    await vi.advanceTimersByTimeAsync(30_000);
    await watch.stop();
    expect(queries[1]).not.toContain('CloseTime');
    expect(queries[2]).toContain(`CloseTime > "2026-12-01T11:55:00.000Z"`);
  });

  it('reports the SDK timing a call out at the deadline as no answer within 60 s too', async () => {
    const { watch, failures, lines } = sweepOn({ list: timesOutAt60s });
    await vi.advanceTimersByTimeAsync(60_000);
    await watch.stop();
    expect(await failures()).toBe(1);
    expect(lines.at(-1)).toMatchObject({ dependency: 'temporal visibility', err: 'no answer within 60 s' });
  });

  it('warns with the cause the Temporal SDK wraps its error around', async () => {
    const list = () =>
      Promise.reject(new Error('Failed to list workflows', { cause: new Error('Timeout expired') }));
    const { watch, lines } = sweepOn({ list });
    await vi.advanceTimersByTimeAsync(0);
    await watch.stop();
    expect(lines.at(-1)).toMatchObject({ err: 'Failed to list workflows: Timeout expired' });
  });
});
