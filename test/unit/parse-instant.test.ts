import { describe, expect, it } from 'vitest';
import { parseInstant } from '../../src/history/balance-history.js';

describe('parseInstant', () => {
  it.each([
    ['2026-01-01T14:03:00Z', '2026-01-01T14:03:00.000Z'],
    ['2026-01-01t14:03z', '2026-01-01T14:03:00.000Z'],
    ['2026-01-01T15:03:00.123456789+01:00', '2026-01-01T14:03:00.123Z'],
    ['2026-01-02T04:03:00+14:00', '2026-01-01T14:03:00.000Z'],
    ['2026-01-01T02:03:00-12:00', '2026-01-01T14:03:00.000Z'],
    ['2026-01-01T19:33:00+05:30', '2026-01-01T14:03:00.000Z'],
    ['2028-02-29T00:00:00Z', '2028-02-29T00:00:00.000Z'],
    ['0000-02-29T00:00:00Z', '0000-02-29T00:00:00.000Z'],
  ])('reads %s as %s', (text, iso) => {
    expect((parseInstant(text) as Date).toISOString()).toBe(iso);
  });

  it.each(['+24:00', '+14:01', '-15:00', '+05:60', '+99:99'])(
    'refuses the time zone offset %s, naming the range',
    (offset) => {
      expect(parseInstant(`2026-01-01T14:03:00${offset}`)).toBe(
        `"2026-01-01T14:03:00${offset}" has a time zone offset outside -14:00 to +14:00`,
      );
    },
  );

  it.each(['2026-02-29T00:00:00Z', '2026-13-01T00:00:00Z', '2026-01-01T24:00:00Z', '2026-01-01T14:60:00Z'])(
    'refuses %s, a field out of range',
    (text) => {
      expect(parseInstant(text)).toBe(`"${text}" is not a valid time`);
    },
  );
});
