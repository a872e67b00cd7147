import { randomInt } from 'node:crypto';
import type { DeadLetterCode } from '../bridge/parse-transaction.js';

/** Header that marks a deliberately bad message (bad-message mode) with its kind. */
export const BAD_KIND_HEADER = 'x-producer-bad-kind';

/**
 * A random amount in [-1000, 1000] as an exact decimal literal with at most 2 decimals and no
 * trailing fractional zeros: "600", "-12.5", "0.07".
 */
export function randomAmount(maxCents = 100_000): string {
  return formatCents(randomInt(-maxCents, maxCents + 1));
}

export function formatCents(cents: number): string {
  const sign = cents < 0 ? '-' : '';
  const abs = Math.abs(cents);
  const whole = Math.floor(abs / 100);
  const fraction = String(abs % 100)
    .padStart(2, '0')
    .replace(/0+$/, '');
  return `${sign}${whole}${fraction ? `.${fraction}` : ''}`;
}

/** The body the original producer sends: {"id": <provider id>, "value": <amount>}, amount as a JSON number. */
export function transactionBody(providerId: number, value: string): Buffer {
  return Buffer.from(`{"id": ${providerId}, "value": ${value}}`);
}

export interface BadMessage {
  kind: string;
  /** What the app's parseTransaction answers for it. */
  code: DeadLetterCode;
  body: (providerId: number, value: string) => Buffer;
}

/** Bodies the app must reject before any database work; bad-message mode cycles through them. */
export const BAD_MESSAGES: readonly BadMessage[] = [
  { kind: 'truncated-json', code: 'invalid_json', body: (id) => Buffer.from(`{"id": ${id}, "value": `) },
  { kind: 'empty-body', code: 'invalid_json', body: () => Buffer.alloc(0) },
  { kind: 'array', code: 'not_an_object', body: (id, value) => Buffer.from(`[${id}, ${value}]`) },
  {
    kind: 'string-value',
    code: 'invalid_value',
    body: (id, value) => Buffer.from(`{"id": ${id}, "value": "${value}"}`),
  },
  {
    kind: 'exponent-value',
    code: 'invalid_value',
    body: (id) => Buffer.from(`{"id": ${id}, "value": 1.5e3}`),
  },
  { kind: 'missing-value', code: 'missing_field', body: (id) => Buffer.from(`{"id": ${id}}`) },
  {
    kind: 'extra-field',
    code: 'unexpected_field',
    body: (id, value) => Buffer.from(`{"id": ${id}, "value": ${value}, "currency": "EUR"}`),
  },
  { kind: 'zero-id', code: 'invalid_id', body: (_id, value) => Buffer.from(`{"id": 0, "value": ${value}}`) },
  {
    kind: 'not-utf8',
    code: 'not_utf8',
    body: (id) =>
      Buffer.concat([Buffer.from(`{"id": ${id}, "value": `), Buffer.from([0xff, 0xfe]), Buffer.from('}')]),
  },
];

/**
 * Whether message `index` (0-based) is a bad one at `ratio`: exactly floor(n * ratio) of the first n
 * messages are bad, spread evenly, so a run's count of bad messages is predictable.
 */
export function isBadAt(index: number, ratio: number): boolean {
  if (ratio <= 0) return false;
  if (ratio >= 1) return true;
  // Rounded first so that binary fractions (0.57 * 100 = 56.99...) count as the decimal intends.
  const bad = (n: number) => Math.floor(Math.round(n * ratio * 1e9) / 1e9);
  return bad(index + 1) > bad(index);
}
