import { gzipSync } from 'node:zlib';
import type { DeadLetterCode } from '../../src/bridge/parse-transaction.js';

/**
 * Hostile and edge-case messages for the incoming queue, shared by the parseTransaction unit tests
 * and the end-to-end hostile-input test. The validity rule itself is documented at the top of
 * src/bridge/parse-transaction.ts. Expectations assume the default MAX_MESSAGE_BYTES (CORPUS_MAX_BYTES)
 * and the producer's seed, in which providers 1 and 2 exist.
 */

/** The AMQP properties a case sets; everything else is left unset. */
export interface CaseProperties {
  contentType?: string;
  contentEncoding?: string;
  messageId?: string;
}

export interface HostileCase {
  name: string;
  body: string | Buffer;
  properties?: CaseProperties;
  /** The x-balance-sync-reason-code the dead letter must carry. */
  code: DeadLetterCode;
}

export interface ValidCase {
  name: string;
  body: string | Buffer;
  properties?: CaseProperties;
  providerId: number;
  /** The exact decimal literal parseTransaction must return. */
  value: string;
  /** `transaction_value::text` in Postgres, when it differs from `value` (NUMERIC has no -0). */
  storedAs?: string;
}

/** MAX_MESSAGE_BYTES when unset (src/config.ts). */
export const CORPUS_MAX_BYTES = 65_536;

/**
 * Codes the bridge assigns after parseTransaction has accepted the body: the provider is looked up in
 * Postgres and the message_id length is checked by the bridge. parseTransaction returns ok for these.
 */
export const BRIDGE_LEVEL_CODES: ReadonlySet<DeadLetterCode> = new Set([
  'unknown_provider',
  'invalid_message_id',
]);

const GOOD = '{"id": 1, "value": 1}';
const utf8 = (text: string) => Buffer.from(text, 'utf8');
const bytes = (...parts: (string | number[])[]) =>
  Buffer.concat(parts.map((part) => (typeof part === 'string' ? utf8(part) : Buffer.from(part))));
/** A valid body padded with trailing whitespace to exactly `size` bytes. */
const paddedTo = (size: number, body = GOOD) => body + ' '.repeat(size - Buffer.byteLength(body));
const BOM = [0xef, 0xbb, 0xbf];

export const HOSTILE_CASES: readonly HostileCase[] = [
  // Not JSON at all.
  { name: 'invalid JSON', body: 'not json', code: 'invalid_json' },
  { name: 'an empty body', body: '', code: 'invalid_json' },
  { name: 'whitespace only', body: ' \n\t\r ', code: 'invalid_json' },
  { name: 'truncated object', body: '{"id": 1, "value": 1', code: 'invalid_json' },
  { name: 'trailing comma', body: '{"id": 1, "value": 1,}', code: 'invalid_json' },
  { name: 'single-quoted keys', body: "{'id': 1, 'value': 1}", code: 'invalid_json' },
  { name: 'a comment', body: '{"id": 1, /* c */ "value": 1}', code: 'invalid_json' },
  { name: 'trailing garbage', body: '{"id": 1, "value": 1} x', code: 'invalid_json' },
  {
    name: 'two concatenated objects',
    body: '{"id": 1, "value": 1}{"id": 1, "value": 2}',
    code: 'invalid_json',
  },
  { name: 'non-JSON whitespace (form feed)', body: '{"id": 1,\f"value": 1}', code: 'invalid_json' },
  { name: 'a raw NUL inside a key', body: '{"id\u0000": 1, "value": 1}', code: 'invalid_json' },
  { name: 'bare NaN as value', body: '{"id": 1, "value": NaN}', code: 'invalid_json' },
  { name: 'bare Infinity as value', body: '{"id": 1, "value": Infinity}', code: 'invalid_json' },
  { name: 'bare -Infinity as value', body: '{"id": 1, "value": -Infinity}', code: 'invalid_json' },
  { name: 'leading plus sign', body: '{"id": 1, "value": +1}', code: 'invalid_json' },
  { name: 'leading zero', body: '{"id": 1, "value": 01}', code: 'invalid_json' },
  { name: 'leading dot', body: '{"id": 1, "value": .5}', code: 'invalid_json' },
  { name: 'trailing dot', body: '{"id": 1, "value": 1.}', code: 'invalid_json' },
  { name: 'hexadecimal value', body: '{"id": 1, "value": 0x10}', code: 'invalid_json' },
  { name: 'deeply nested arrays', body: `{"id": 1, "value": ${'['.repeat(60_000)}`, code: 'invalid_json' },
  {
    name: 'duplicate key with different values',
    body: '{"id": 1, "id": 2, "value": 1}',
    code: 'invalid_json',
  },
  {
    name: 'duplicate key with equal values',
    body: '{"id": 1, "value": 1, "value": 1}',
    code: 'invalid_json',
  },
  { name: 'a double BOM', body: bytes(BOM, BOM, GOOD), code: 'invalid_json' },

  // JSON, but not an object.
  { name: 'a JSON array', body: '[1, 600]', code: 'not_an_object' },
  { name: 'JSON null', body: 'null', code: 'not_an_object' },
  { name: 'a top-level JSON string', body: '"{\\"id\\": 1, \\"value\\": 1}"', code: 'not_an_object' },
  { name: 'a top-level JSON number', body: '600', code: 'not_an_object' },
  { name: 'a top-level JSON boolean', body: 'true', code: 'not_an_object' },

  // Wrong fields.
  { name: 'missing value', body: '{"id": 1}', code: 'missing_field' },
  { name: 'missing id', body: '{"value": 1}', code: 'missing_field' },
  { name: 'an empty object', body: '{}', code: 'missing_field' },
  { name: 'an extra field', body: '{"id": 1, "value": 1, "currency": "EUR"}', code: 'unexpected_field' },
  { name: 'a differently cased key', body: '{"ID": 1, "value": 1}', code: 'unexpected_field' },
  {
    name: 'prototype pollution via __proto__',
    body: '{"__proto__": {"polluted": true, "id": 2}, "id": 1, "value": 1}',
    code: 'unexpected_field',
  },
  {
    name: 'prototype pollution via constructor.prototype',
    body: '{"constructor": {"prototype": {"polluted": true}}, "id": 1, "value": 1}',
    code: 'unexpected_field',
  },
  {
    // A 65 KB field name: the reason must stay short enough for the dead letter's headers.
    name: 'an extra field with a 65 KB name',
    body: `{"id": 1, "value": 1, "${'k'.repeat(65_400)}": 1}`,
    code: 'unexpected_field',
  },
  {
    name: 'thousands of extra fields',
    body: `{"id": 1, "value": 1, ${Array.from({ length: 5_000 }, (_, i) => `"f${i}": 0`).join(', ')}}`,
    code: 'unexpected_field',
  },

  // Bad id.
  { name: 'id as a string', body: '{"id": "1", "value": 1}', code: 'invalid_id' },
  { name: 'id null', body: '{"id": null, "value": 1}', code: 'invalid_id' },
  { name: 'id true', body: '{"id": true, "value": 1}', code: 'invalid_id' },
  { name: 'negative id', body: '{"id": -1, "value": 1}', code: 'invalid_id' },
  { name: 'zero id', body: '{"id": 0, "value": 1}', code: 'invalid_id' },
  { name: 'negative zero id', body: '{"id": -0, "value": 1}', code: 'invalid_id' },
  { name: 'fractional id 1.5', body: '{"id": 1.5, "value": 1}', code: 'invalid_id' },
  { name: 'fractional id 1.0', body: '{"id": 1.0, "value": 1}', code: 'invalid_id' },
  { name: 'exponent id 1e0', body: '{"id": 1e0, "value": 1}', code: 'invalid_id' },
  { name: 'id beyond INTEGER (2147483648)', body: '{"id": 2147483648, "value": 1}', code: 'invalid_id' },
  {
    name: 'id beyond double precision',
    body: '{"id": 100000000000000000000000000001, "value": 1}',
    code: 'invalid_id',
  },
  {
    name: 'id spoofing a lossless number object',
    body: '{"id": {"isLosslessNumber": true, "value": "1"}, "value": 1}',
    code: 'invalid_id',
  },

  // Bad value.
  { name: 'value as a string', body: '{"id": 1, "value": "600"}', code: 'invalid_value' },
  { name: 'value "NaN" as a string', body: '{"id": 1, "value": "NaN"}', code: 'invalid_value' },
  { name: 'value "Infinity" as a string', body: '{"id": 1, "value": "Infinity"}', code: 'invalid_value' },
  { name: 'value true', body: '{"id": 1, "value": true}', code: 'invalid_value' },
  { name: 'value null', body: '{"id": 1, "value": null}', code: 'invalid_value' },
  { name: 'value as an array', body: '{"id": 1, "value": [600]}', code: 'invalid_value' },
  { name: 'value as a nested object', body: '{"id": 1, "value": {"amount": 600}}', code: 'invalid_value' },
  {
    name: 'value spoofing a lossless number object',
    body: '{"id": 1, "value": {"isLosslessNumber": true, "value": "600"}}',
    code: 'invalid_value',
  },
  { name: 'exponent notation 1e3', body: '{"id": 1, "value": 1e3}', code: 'invalid_value' },
  { name: 'exponent notation 1E3', body: '{"id": 1, "value": 1E3}', code: 'invalid_value' },
  { name: 'negative exponent 1.5e-2', body: '{"id": 1, "value": 1.5e-2}', code: 'invalid_value' },
  {
    name: 'an exponent overflowing double (1e400)',
    body: '{"id": 1, "value": 1e400}',
    code: 'invalid_value',
  },
  {
    name: '29 integer digits',
    body: `{"id": 1, "value": 1${'0'.repeat(28)}}`,
    code: 'invalid_value',
  },
  {
    name: '19 fraction digits',
    body: `{"id": 1, "value": 0.${'0'.repeat(18)}1}`,
    code: 'invalid_value',
  },
  {
    name: 'a 300-digit value',
    body: `{"id": 1, "value": ${'9'.repeat(300)}}`,
    code: 'invalid_value',
  },

  // Transport: size, encoding, properties.
  { name: 'a 2 MB body', body: paddedTo(2 * 1024 * 1024), code: 'oversize' },
  { name: 'one byte over the limit', body: paddedTo(CORPUS_MAX_BYTES + 1), code: 'oversize' },
  {
    name: 'non-UTF-8 bytes',
    body: bytes('{"id": 1, "value": 1, "x": "', [0xff, 0xfe], '"}'),
    code: 'not_utf8',
  },
  { name: 'an overlong UTF-8 encoding', body: bytes('{"id": 1, "value": 1', [0xc0, 0xbd]), code: 'not_utf8' },
  {
    name: 'a UTF-8-encoded lone surrogate',
    body: bytes('{"id": 1, "value": 1, "', [0xed, 0xa0, 0x80], '": 1}'),
    code: 'not_utf8',
  },
  {
    name: 'a Latin-1 body',
    body: Buffer.from('{"id": 1, "value": 1, "n": "café"}', 'latin1'),
    code: 'not_utf8',
  },
  {
    name: 'a UTF-16LE body with its BOM',
    body: Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(GOOD, 'utf16le')]),
    properties: { contentType: 'application/json; charset=utf-16' },
    code: 'not_utf8',
  },
  {
    name: 'a UTF-16LE body without a BOM',
    body: Buffer.from(GOOD, 'utf16le'),
    code: 'invalid_json',
  },
  {
    name: 'content-type application/xml',
    body: GOOD,
    properties: { contentType: 'application/xml' },
    code: 'content_type',
  },
  {
    name: 'content-type text/html',
    body: GOOD,
    properties: { contentType: 'text/html' },
    code: 'content_type',
  },
  {
    name: 'content-type application/octet-stream',
    body: GOOD,
    properties: { contentType: 'application/octet-stream' },
    code: 'content_type',
  },
  {
    name: 'content-encoding gzip (really gzipped)',
    body: gzipSync(utf8(GOOD)),
    properties: { contentType: 'application/json', contentEncoding: 'gzip' },
    code: 'content_encoding',
  },
  {
    name: 'content-encoding deflate',
    body: GOOD,
    properties: { contentEncoding: 'deflate' },
    code: 'content_encoding',
  },

  // Well-formed bodies that the bridge refuses.
  { name: 'an unknown provider (999)', body: '{"id": 999, "value": 1}', code: 'unknown_provider' },
  {
    name: 'the largest INTEGER id, unknown',
    body: '{"id": 2147483647, "value": 1}',
    code: 'unknown_provider',
  },
  {
    name: 'a message_id longer than 200 characters',
    body: GOOD,
    properties: { messageId: `hostile-long-id-${'m'.repeat(185)}` },
    code: 'invalid_message_id',
  },
];

export const VALID_CASES: readonly ValidCase[] = [
  { name: 'a plain integer', body: '{"id": 1, "value": 600}', providerId: 1, value: '600' },
  { name: 'a negative integer', body: '{"id": 2, "value": -200}', providerId: 2, value: '-200' },
  { name: 'zero', body: '{"id": 1, "value": 0}', providerId: 1, value: '0' },
  { name: 'minus one cent', body: '{"id": 1, "value": -0.01}', providerId: 1, value: '-0.01' },
  { name: 'a trailing zero kept', body: '{"id": 2, "value": 1300.50}', providerId: 2, value: '1300.50' },
  { name: 'zero with a scale', body: '{"id": 1, "value": 0.000}', providerId: 1, value: '0.000' },
  // Valid JSON and kept as written; Postgres NUMERIC has no negative zero and stores it as 0.
  { name: 'negative zero', body: '{"id": 1, "value": -0}', providerId: 1, value: '-0', storedAs: '0' },
  {
    name: 'a big exact decimal beyond double precision',
    body: '{"id": 1, "value": 12345678901234567890.123456789}',
    providerId: 1,
    value: '12345678901234567890.123456789',
  },
  {
    name: 'the most digits allowed (28.18)',
    body: `{"id": 2, "value": -${'9'.repeat(28)}.${'9'.repeat(18)}}`,
    providerId: 2,
    value: `-${'9'.repeat(28)}.${'9'.repeat(18)}`,
  },
  {
    name: 'the smallest fraction allowed',
    body: '{"id": 2, "value": 0.000000000000000001}',
    providerId: 2,
    value: '0.000000000000000001',
  },
  {
    name: 'whitespace around every token',
    body: ' \r\n\t{ \n "id" \t: \r 2 \n , \t "value" : \n -7.25 \t } \r\n ',
    providerId: 2,
    value: '-7.25',
  },
  { name: 'fields in reverse order', body: '{"value": 42, "id": 2}', providerId: 2, value: '42' },
  {
    name: 'a key written with a unicode escape',
    body: '{"\\u0069d": 1, "valu\\u0065": 3}',
    providerId: 1,
    value: '3',
  },
  {
    // Decision: one UTF-8 byte-order mark is dropped (RFC 8259 §8.1 lets parsers ignore it; the
    // WHATWG TextDecoder does so by default), so a BOM'd body is otherwise judged as usual.
    name: 'a UTF-8 BOM before a valid body',
    body: bytes(BOM, '{"id": 1, "value": 8.5}'),
    providerId: 1,
    value: '8.5',
  },
  {
    name: 'content-type application/json; charset=utf-8',
    body: '{"id": 1, "value": 11}',
    properties: { contentType: 'application/json; charset=utf-8' },
    providerId: 1,
    value: '11',
  },
  {
    name: 'content-type in upper case',
    body: '{"id": 2, "value": 12}',
    properties: { contentType: 'APPLICATION/JSON' },
    providerId: 2,
    value: '12',
  },
  {
    name: 'content-type text/plain',
    body: '{"id": 1, "value": 13}',
    properties: { contentType: 'text/plain' },
    providerId: 1,
    value: '13',
  },
  { name: 'no content-type', body: '{"id": 2, "value": 14}', providerId: 2, value: '14' },
  {
    name: 'content-encoding identity',
    body: '{"id": 1, "value": 15}',
    properties: { contentEncoding: 'identity' },
    providerId: 1,
    value: '15',
  },
  {
    name: 'a body of exactly the size limit',
    body: paddedTo(CORPUS_MAX_BYTES, '{"id": 2, "value": 16}'),
    providerId: 2,
    value: '16',
  },
  {
    name: 'a message_id of exactly 200 characters',
    body: '{"id": 1, "value": 17}',
    properties: { messageId: `hostile-200-id-${'m'.repeat(185)}` },
    providerId: 1,
    value: '17',
  },
];
