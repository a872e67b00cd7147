import { describe, expect, it } from 'vitest';
import { isOutage } from '../../src/bridge/handle-delivery.js';

const withCode = (code: string | number, message = 'x') => Object.assign(new Error(message), { code });

describe('isOutage: which bridge errors are retried for as long as they last', () => {
  it.each([
    [
      'Temporal unavailable (gRPC 14) under a ServiceError',
      new Error('Failed to start Workflow', { cause: withCode(14) }),
    ],
    ['a gRPC deadline (4)', withCode(4)],
    ['a reset gRPC stream (UNKNOWN, 2)', withCode(2, 'Received RST_STREAM')],
    ['a refused TCP connection', withCode('ECONNREFUSED')],
    ['Postgres shutting down (57P01)', withCode('57P01')],
    ['a Postgres connection failure (08006)', withCode('08006')],
    ['pg: Connection terminated unexpectedly', new Error('Connection terminated unexpectedly')],
  ])('%s is an outage', (_name, error) => {
    expect(isOutage(error)).toBe(true);
  });

  it.each([
    ['a TypeError (a bug)', new TypeError("Cannot read properties of undefined (reading 'has')")],
    [
      'a Node-core TypeError with an ERR_ code (a bug)',
      Object.assign(new TypeError('The "chunk" argument must be of type string'), {
        code: 'ERR_INVALID_ARG_TYPE',
      }),
    ],
    ['gRPC INVALID_ARGUMENT (3)', withCode(3)],
    ['a unique violation (23505)', withCode('23505')],
    ['a broker nack of a dead letter', new Error('message nacked')],
  ])('%s is not', (_name, error) => {
    expect(isOutage(error)).toBe(false);
  });
});
