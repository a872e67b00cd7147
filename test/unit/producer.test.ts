import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseTransaction } from '../../src/bridge/parse-transaction.js';
import { replayHeaders, REPLAY_COUNT_HEADER } from '../../src/ops/dlq-replay.js';
import {
  BAD_MESSAGES,
  formatCents,
  isBadAt,
  randomAmount,
  transactionBody,
} from '../../src/producer/messages.js';
import { parseProducerOptions, UsageError } from '../../src/producer/options.js';
import { producerFixturePath, splitFixture } from '../../src/producer/schema.js';

describe('producer options', () => {
  it("defaults to the original's behaviour", () => {
    expect(parseProducerOptions([], {})).toEqual({
      rate: undefined,
      count: undefined,
      minDelaySeconds: 10,
      maxDelaySeconds: 40,
      messageIds: false,
      badRatio: 0,
      reseed: false,
      progressSeconds: 5,
      heartbeatFile: undefined,
      queue: undefined,
      help: false,
    });
  });

  it('reads the environment, and flags win over it', () => {
    const env = {
      PRODUCER_RATE: '50',
      PRODUCER_COUNT: '1000',
      PRODUCER_MESSAGE_IDS: 'true',
      PRODUCER_BAD_RATIO: '0.1',
      PRODUCER_RESEED: '1',
      PRODUCER_HEARTBEAT_FILE: '/tmp/beat',
    };
    expect(parseProducerOptions([], env)).toMatchObject({
      rate: 50,
      count: 1000,
      messageIds: true,
      badRatio: 0.1,
      reseed: true,
      heartbeatFile: '/tmp/beat',
    });
    expect(
      parseProducerOptions(['--rate', '2.5', '--count', '7', '--bad-ratio', '0', '--queue', 'q'], env),
    ).toMatchObject({ rate: 2.5, count: 7, badRatio: 0, queue: 'q', messageIds: true });
  });

  it.each([
    [['--rate', '0']],
    [['--rate', 'fast']],
    [['--count', '1.5']],
    [['--count', '-1']],
    [['--bad-ratio', '1.1']],
    [['--min-delay', '5', '--max-delay', '1']],
    [['--unknown']],
    [['positional']],
  ])('rejects %j with a UsageError', (argv) => {
    expect(() => parseProducerOptions(argv, {})).toThrow(UsageError);
  });

  it('rejects a malformed boolean in the environment', () => {
    expect(() => parseProducerOptions([], { PRODUCER_MESSAGE_IDS: 'yes' })).toThrow(/true or false/);
  });
});

describe('producer messages', () => {
  it('formats cents as exact decimals with at most 2 decimals', () => {
    expect([0, 5, 50, 100, 60000, -20000, 1234, -1, -10, 123456].map(formatCents)).toEqual([
      '0',
      '0.05',
      '0.5',
      '1',
      '600',
      '-200',
      '12.34',
      '-0.01',
      '-0.1',
      '1234.56',
    ]);
  });

  it('makes bodies the app accepts, with the amount exactly as written', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 2_147_483_647 }),
        fc.integer({ min: -100_000, max: 100_000 }),
        (id, cents) => {
          const value = formatCents(cents);
          const parsed = parseTransaction({ body: transactionBody(id, value) }, 65536);
          expect(parsed).toEqual({ ok: true, transaction: { providerId: id, value } });
          expect(Number(value) * 100).toBeCloseTo(cents, 6);
        },
      ),
    );
    for (let i = 0; i < 200; i++) expect(Math.abs(Number(randomAmount()))).toBeLessThanOrEqual(1000);
  });

  it('makes malformed bodies the app parser rejects with the stated code', () => {
    for (const bad of BAD_MESSAGES) {
      expect(parseTransaction({ body: bad.body(1, '12.5') }, 65536), bad.kind).toMatchObject({
        ok: false,
        code: bad.code,
      });
    }
  });

  it('spreads exactly floor(n * ratio) bad messages over the first n', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 100 }), fc.integer({ min: 0, max: 500 }), (percent, n) => {
        const ratio = percent / 100;
        const bad = Array.from({ length: n }, (_, i) => isBadAt(i, ratio)).filter(Boolean).length;
        expect(bad).toBe(Math.floor((n * percent) / 100));
      }),
    );
  });
});

describe('producer schema fixture', () => {
  it('splits into the two CREATE TABLEs and the two seed INSERTs', () => {
    const { create, seed } = splitFixture(readFileSync(producerFixturePath(), 'utf8'));
    expect(create.map((s) => /TABLE IF NOT EXISTS (\w+)/.exec(s)?.[1])).toEqual([
      'initial_data',
      'historical_transactions',
    ]);
    expect(seed.map((s) => /INSERT INTO (\w+)/.exec(s)?.[1])).toEqual([
      'initial_data',
      'historical_transactions',
    ]);
  });
});

describe('dlq replay headers', () => {
  it('drops the reason headers, keeps the others and counts the replay', () => {
    expect(
      replayHeaders({
        'x-balance-sync-reason': 'body is not valid JSON',
        'x-balance-sync-reason-code': 'invalid_json',
        'x-balance-sync-dead-lettered-at': '2026-01-01T00:00:00.000Z',
        'x-original-queue': 'incoming_transactions',
        'x-original-redelivered': false,
        'x-custom': 'kept',
      }),
    ).toEqual({ 'x-custom': 'kept', [REPLAY_COUNT_HEADER]: 1 });
    expect(replayHeaders({ [REPLAY_COUNT_HEADER]: 2 })).toEqual({ [REPLAY_COUNT_HEADER]: 3 });
    expect(replayHeaders(undefined)).toEqual({ [REPLAY_COUNT_HEADER]: 1 });
  });
});
