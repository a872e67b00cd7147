import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import {
  parseTransaction,
  type DeadLetterCode,
  type MessageEnvelope,
  type ParseResult,
} from '../../src/bridge/parse-transaction.js';
import {
  BRIDGE_LEVEL_CODES,
  CORPUS_MAX_BYTES,
  HOSTILE_CASES,
  VALID_CASES,
  type CaseProperties,
} from '../support/hostile-corpus.js';

const PARSER_CODES: ReadonlySet<DeadLetterCode> = new Set([
  'oversize',
  'content_type',
  'content_encoding',
  'not_utf8',
  'invalid_json',
  'not_an_object',
  'missing_field',
  'unexpected_field',
  'invalid_id',
  'invalid_value',
]);
const DECIMAL = /^-?(0|[1-9]\d*)(\.\d+)?$/;
const MAX_ID = 2_147_483_647;

const envelope = (body: string | Buffer | Uint8Array, properties: CaseProperties = {}): MessageEnvelope => ({
  body: typeof body === 'string' ? Buffer.from(body, 'utf8') : Buffer.from(body),
  contentType: properties.contentType,
  contentEncoding: properties.contentEncoding,
});
const parse = (
  body: string | Buffer | Uint8Array,
  properties?: CaseProperties,
  maxBytes = CORPUS_MAX_BYTES,
) => parseTransaction(envelope(body, properties), maxBytes);

/** The two-outcome contract: a plain-decimal transaction, or a known parser code with a short reason. */
function expectWellFormedOutcome(result: ParseResult) {
  if (result.ok) {
    expect(Object.keys(result).sort()).toEqual(['ok', 'transaction']);
    expect(Object.keys(result.transaction).sort()).toEqual(['providerId', 'value']);
    expect(result.transaction.value).toMatch(DECIMAL);
    expect(Number.isInteger(result.transaction.providerId)).toBe(true);
    expect(result.transaction.providerId).toBeGreaterThanOrEqual(1);
    expect(result.transaction.providerId).toBeLessThanOrEqual(MAX_ID);
  } else {
    expect(Object.keys(result).sort()).toEqual(['code', 'ok', 'reason']);
    expect(PARSER_CODES.has(result.code)).toBe(true);
    expect(typeof result.reason).toBe('string');
    expect(result.reason.trim()).not.toBe('');
    expect(result.reason.length).toBeLessThanOrEqual(300);
  }
}

describe('the hostile corpus', () => {
  it('has at least 25 distinct bad cases and uniquely named cases overall', () => {
    expect(HOSTILE_CASES.length).toBeGreaterThanOrEqual(25);
    const names = [...HOSTILE_CASES, ...VALID_CASES].map((c) => c.name);
    expect(new Set(names).size).toBe(names.length);
  });

  it('is written against the default MAX_MESSAGE_BYTES', () => {
    expect(loadConfig({}).MAX_MESSAGE_BYTES).toBe(CORPUS_MAX_BYTES);
  });

  it('keeps every case except the oversize ones within the limit', () => {
    for (const c of [...HOSTILE_CASES, ...VALID_CASES]) {
      const size = Buffer.byteLength(c.body);
      if ('code' in c && c.code === 'oversize') expect(size, c.name).toBeGreaterThan(CORPUS_MAX_BYTES);
      else expect(size, c.name).toBeLessThanOrEqual(CORPUS_MAX_BYTES);
    }
  });
});

describe('parseTransaction over the corpus', () => {
  const parserCases = HOSTILE_CASES.filter((c) => !BRIDGE_LEVEL_CODES.has(c.code));
  const bridgeCases = HOSTILE_CASES.filter((c) => BRIDGE_LEVEL_CODES.has(c.code));

  it.each(parserCases.map((c) => [c.name, c] as const))('rejects %s', (_name, c) => {
    const result = parse(c.body, c.properties); // a throw fails the test
    expect(result).toMatchObject({ ok: false, code: c.code });
    expectWellFormedOutcome(result);
  });

  it.each(bridgeCases.map((c) => [c.name, c] as const))(
    'accepts the body of %s (the bridge refuses it later)',
    (_name, c) => {
      const result = parse(c.body, c.properties);
      expect(result.ok).toBe(true);
      expectWellFormedOutcome(result);
    },
  );

  it.each(VALID_CASES.map((c) => [c.name, c] as const))('accepts %s with its exact value', (_name, c) => {
    const result = parse(c.body, c.properties);
    expect(result).toEqual({ ok: true, transaction: { providerId: c.providerId, value: c.value } });
  });

  it('never pollutes Object.prototype', () => {
    for (const c of HOSTILE_CASES) parse(c.body, c.properties);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.prototype).not.toHaveProperty('polluted');
    expect(Object.prototype).not.toHaveProperty('id');
  });

  it('keeps reasons short even when they would echo a huge field name', () => {
    const result = parse(`{"id": 1, "value": 1, "${'k'.repeat(65_000)}": 1, "a": 2}`);
    expect(result).toMatchObject({ ok: false, code: 'unexpected_field' });
    if (!result.ok) {
      expect(result.reason.length).toBeLessThanOrEqual(300);
      expect(result.reason).toContain('unexpected field');
    }
  });

  it('names the offending field', () => {
    const result = parse('{"id": 1, "value": 1, "currency": "EUR"}');
    expect(!result.ok && result.reason).toContain('"currency"');
    const missing = parse('{"id": 1}');
    expect(!missing.ok && missing.reason).toContain('"value"');
  });

  it('measures the limit in bytes, not characters', () => {
    const body = '{"id": 1, "value": 1}    ';
    const multibyte = `${'{"id": 1, "value": 1}'}${'\u00a0'}`; // 2-byte char; not JSON whitespace anyway
    expect(parse(body, {}, Buffer.byteLength(body)).ok).toBe(true);
    expect(parse(body, {}, Buffer.byteLength(body) - 1)).toMatchObject({ ok: false, code: 'oversize' });
    expect(parse(multibyte, {}, multibyte.length)).toMatchObject({ ok: false, code: 'oversize' });
  });
});

// ---------------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------------

const digits = (min: number, max: number) =>
  fc.array(fc.constantFrom(...'0123456789'), { minLength: min, maxLength: max }).map((d) => d.join(''));

/** A valid plain decimal built from digit strings, never from a float. */
const decimalParts = fc.record({
  negative: fc.boolean(),
  integer: fc.oneof(
    fc.constant('0'),
    fc.tuple(fc.constantFrom(...'123456789'), digits(0, 27)).map(([head, tail]) => head + tail),
  ),
  fraction: fc.option(digits(1, 18), { nil: undefined }),
});
type DecimalParts = { negative: boolean; integer: string; fraction: string | undefined };
const literal = ({ negative, integer, fraction }: DecimalParts) =>
  `${negative ? '-' : ''}${integer}${fraction === undefined ? '' : `.${fraction}`}`;

const providerId = fc.integer({ min: 1, max: MAX_ID });
const ws = fc.array(fc.constantFrom(' ', '\t', '\n', '\r'), { maxLength: 3 }).map((w) => w.join(''));

/** `{"id": <id>, "value": <decimal>}` with arbitrary JSON whitespace and either key order. */
const validBody = fc
  .record({
    id: providerId,
    parts: decimalParts,
    swap: fc.boolean(),
    pad: fc.array(ws, { minLength: 8, maxLength: 8 }),
  })
  .map(({ id, parts, swap, pad }) => {
    const value = literal(parts);
    const members = [`"id"${pad[0]}:${pad[1]}${id}`, `"value"${pad[2]}:${pad[3]}${value}`];
    if (swap) members.reverse();
    return { id, parts, value, body: `${pad[4]}{${pad[5]}${members.join(`${pad[6]},`)}${pad[7]}}` };
  });

const contentTypes = fc.option(
  fc.oneof(
    fc.constantFrom('application/json', 'text/plain', 'application/json; charset=utf-8', 'text/html', ''),
    fc.string(),
  ),
  { nil: undefined },
);
const contentEncodings = fc.option(fc.oneof(fc.constantFrom('identity', 'utf-8', 'gzip', ''), fc.string()), {
  nil: undefined,
});

/** Any JSON-ish value for "id" or "value", including the numbers that look almost right. */
const anyField = fc.oneof(
  fc.jsonValue(),
  fc.string(),
  fc.double(),
  fc.integer(),
  fc.bigInt().map((n) => ({ raw: n.toString() })),
  decimalParts.map((p) => ({ raw: literal(p) })),
  fc.constantFrom('NaN', 'Infinity', '-0', '1e3', '1.0', '01').map((raw) => ({ raw })),
);
/** Renders fields, keeping `{raw}` as an unquoted literal so big and odd numbers reach the parser. */
const render = (value: unknown): string =>
  value !== null && typeof value === 'object' && 'raw' in value
    ? String((value as { raw: string }).raw)
    : (JSON.stringify(value) ?? 'null');

const RUNS = { numRuns: 1000 };

describe('parseTransaction properties', () => {
  it('has exactly two outcomes and never throws, for arbitrary strings', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.string({ unit: 'grapheme' })),
        contentTypes,
        contentEncodings,
        (text, contentType, contentEncoding) => {
          expectWellFormedOutcome(parse(text, { contentType, contentEncoding }));
        },
      ),
      RUNS,
    );
  });

  it('has exactly two outcomes and never throws, for arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), fc.integer({ min: 0, max: 600 }), (body, maxBytes) => {
        expectWellFormedOutcome(parse(body, {}, maxBytes));
      }),
      RUNS,
    );
  });

  it('has exactly two outcomes and never throws, for arbitrary JSON texts', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.json(),
          fc.jsonValue().map((v) => JSON.stringify(v)),
        ),
        (text) => {
          const result = parse(text);
          expectWellFormedOutcome(result);
          const value: unknown = JSON.parse(text);
          if (value === null || typeof value !== 'object' || Array.isArray(value))
            expect(result).toMatchObject({ ok: false, code: 'not_an_object' });
        },
      ),
      RUNS,
    );
  });

  it('has exactly two outcomes and never throws, for objects with id and value of any type', () => {
    fc.assert(
      fc.property(
        fc.record(
          {
            id: anyField,
            value: anyField,
            extra: fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 2 }),
          },
          { requiredKeys: [] },
        ),
        ({ extra, ...named }) => {
          const members: [string, unknown][] = [...Object.entries(named), ...Object.entries(extra ?? {})];
          const body = `{${members.map(([key, value]) => `${JSON.stringify(key)}: ${render(value)}`).join(', ')}}`;
          const result = parse(body);
          expectWellFormedOutcome(result);
          if (result.ok) {
            // Only the exact shape {"id": <positive integer>, "value": <plain decimal>} gets through.
            expect(members.map(([key]) => key).sort()).toEqual(['id', 'value']);
            expect(render(named.value)).toBe(result.transaction.value);
            expect(render(named.id)).toBe(String(result.transaction.providerId));
          }
        },
      ),
      RUNS,
    );
  });

  it('has exactly two outcomes and never throws, for single-character mutations of a valid body', () => {
    fc.assert(
      fc.property(
        validBody,
        fc.nat(),
        fc.constantFrom('insert', 'delete', 'replace'),
        fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }),
        ({ body }, at, op, char) => {
          const i = at % (body.length + 1);
          const mutated =
            op === 'insert'
              ? body.slice(0, i) + char + body.slice(i)
              : op === 'delete'
                ? body.slice(0, i) + body.slice(i + 1)
                : body.slice(0, i) + char + body.slice(i + 1);
          expectWellFormedOutcome(parse(mutated));
        },
      ),
      RUNS,
    );
  });

  it('round-trips every valid id and decimal literal exactly', () => {
    fc.assert(
      fc.property(validBody, ({ id, value, body }) => {
        expect(parse(body)).toEqual({ ok: true, transaction: { providerId: id, value } });
      }),
      RUNS,
    );
  });

  it('keeps the exact digits and scale of every valid decimal (no float conversion)', () => {
    fc.assert(
      fc.property(decimalParts, providerId, (parts, id) => {
        const text = literal(parts);
        const result = parse(`{"id": ${id}, "value": ${text}}`);
        expect(result.ok).toBe(true);
        if (!result.ok) return;
        const { value } = result.transaction;
        expect(value).toBe(text);
        // Same unscaled integer and same scale as the generated digits: exact, independently of
        // how the string looks and of Postgres.
        const [whole = '', fraction = ''] = value.replace('-', '').split('.');
        const sign = value.startsWith('-') ? -1n : 1n;
        expect(sign * BigInt(whole + fraction)).toBe(
          (parts.negative ? -1n : 1n) * BigInt(parts.integer + (parts.fraction ?? '')),
        );
        expect(fraction.length).toBe(parts.fraction?.length ?? 0);
      }),
      RUNS,
    );
  });

  it('rejects values with too many integer or fraction digits', () => {
    const tooLong = fc.oneof(
      fc
        .tuple(fc.constantFrom(...'123456789'), digits(28, 40), fc.option(digits(1, 18), { nil: undefined }))
        .map(([head, tail, fraction]) => `${head}${tail}${fraction === undefined ? '' : `.${fraction}`}`),
      fc
        .tuple(fc.constantFrom('0', '1', '123'), digits(19, 40))
        .map(([whole, fraction]) => `${whole}.${fraction}`),
    );
    fc.assert(
      fc.property(tooLong, fc.boolean(), (text, negative) => {
        const result = parse(`{"id": 1, "value": ${negative ? '-' : ''}${text}}`);
        expect(result).toMatchObject({ ok: false, code: 'invalid_value' });
      }),
      RUNS,
    );
  });

  it('rejects ids outside 1..2147483647 and non-integer ids', () => {
    const badId = fc.oneof(
      fc.bigInt({ min: BigInt(MAX_ID) + 1n, max: 10n ** 40n }).map(String),
      fc.bigInt({ min: -(10n ** 20n), max: 0n }).map(String),
      fc.tuple(providerId, digits(1, 5)).map(([id, fraction]) => `${id}.${fraction}`),
      fc.tuple(providerId, fc.integer({ min: -5, max: 5 })).map(([id, exp]) => `${id}e${exp}`),
    );
    fc.assert(
      fc.property(badId, (id) => {
        expect(parse(`{"id": ${id}, "value": 1}`)).toMatchObject({ ok: false, code: 'invalid_id' });
      }),
      RUNS,
    );
  });
});

describe('parseTransaction, case by case (the exact result, not just its shape)', () => {
  const GOOD = '{"id": 7, "value": -12.50}';
  const accepted = { ok: true, transaction: { providerId: 7, value: '-12.50' } };
  const rejected = (code: DeadLetterCode, reason: string) => ({ ok: false, code, reason });

  it('accepts JSON content types written any way, and refuses others by their media type', () => {
    for (const contentType of [
      'application/json',
      ' Application/JSON ; charset=utf-8',
      'APPLICATION/JSON;x=1',
    ])
      expect(parse(GOOD, { contentType })).toEqual(accepted);
    expect(parse(GOOD, { contentType: 'Text/HTML; charset=utf-8' })).toEqual(
      rejected('content_type', 'content-type "text/html" is not application/json'),
    );
  });

  it('accepts identity and UTF-8 content encodings written any way, and refuses others', () => {
    for (const contentEncoding of ['identity', ' UTF-8 ', 'utf8', 'UTF8'])
      expect(parse(GOOD, { contentEncoding })).toEqual(accepted);
    expect(parse(GOOD, { contentEncoding: ' GZip ' })).toEqual(
      rejected('content_encoding', 'content-encoding "gzip" is not supported'),
    );
  });

  it('names at most five unexpected fields, counts the rest, and shortens long names', () => {
    const body = (names: string[]) => `{"id": 1, "value": 1, ${names.map((n) => `"${n}": 0`).join(', ')}}`;
    expect(parse(body(['a', 'b', 'c', 'd', 'e']))).toEqual(
      rejected('unexpected_field', 'unexpected field(s): "a", "b", "c", "d", "e"'),
    );
    expect(parse(body(['a', 'b', 'c', 'd', 'e', 'f', 'g']))).toEqual(
      rejected('unexpected_field', 'unexpected field(s): "a", "b", "c", "d", "e" and 2 more'),
    );
    const forty = 'x'.repeat(40);
    expect(parse(body([forty]))).toEqual(rejected('unexpected_field', `unexpected field(s): "${forty}"`));
    expect(parse(body([`${forty}y`]))).toEqual(
      rejected('unexpected_field', `unexpected field(s): "${'x'.repeat(39)}…"`),
    );
  });

  it('says what a non-number value is', () => {
    const value = (literal: string) => parse(`{"id": 1, "value": ${literal}}`);
    expect(value('null')).toEqual(rejected('invalid_value', '"value" must be a JSON number, not null'));
    expect(value('[1]')).toEqual(rejected('invalid_value', '"value" must be a JSON number, not an array'));
    expect(value('{"a": 1}')).toEqual(
      rejected('invalid_value', '"value" must be a JSON number, not an object'),
    );
    expect(value('"1"')).toEqual(rejected('invalid_value', '"value" must be a JSON number, not a string'));
    expect(value('true')).toEqual(rejected('invalid_value', '"value" must be a JSON number, not a boolean'));
  });

  it('quotes at most 40 characters of a value with an exponent', () => {
    expect(parse('{"id": 1, "value": 1e3}')).toEqual(
      rejected('invalid_value', '"value" must be a plain decimal (no exponent), got 1e3'),
    );
    const long = `1${'0'.repeat(50)}e3`;
    expect(parse(`{"id": 1, "value": ${long}}`)).toEqual(
      rejected('invalid_value', `"value" must be a plain decimal (no exponent), got ${long.slice(0, 40)}`),
    );
  });
});
