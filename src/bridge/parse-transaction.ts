/**
 * The validity rule for a message on the incoming queue. A message is a transaction only if all hold:
 *
 * - The body is at most MAX_MESSAGE_BYTES bytes (checked first, before any decoding).
 * - content-type is absent, application/json or text/plain (case-insensitive; parameters such as
 *   `; charset=utf-8` are ignored: the body is always decoded as UTF-8). content-encoding is absent,
 *   identity, utf-8 or utf8; anything else (gzip, deflate, ...) is refused, never decompressed.
 * - The body is valid UTF-8. One leading byte-order mark (EF BB BF) is dropped, as RFC 8259 §8.1
 *   allows, so a BOM'd valid body is valid; a second BOM is not JSON whitespace and fails as JSON.
 * - The body is one JSON object (RFC 8259; no comments, trailing commas, NaN or Infinity) with
 *   exactly the two fields "id" and "value": no other field, neither missing, no key repeated.
 * - "id" is a JSON number written as a positive integer literal (no sign, fraction or exponent) of at
 *   most 2147483647, the INTEGER range of historical_transactions.provider_id. "1.0" and "1e0" are not.
 * - "value" is a JSON number in plain decimal notation (no exponent), -?(0|[1-9]\d*)(\.\d+)?, with at
 *   most 28 integer digits and 18 fraction digits. It is kept as its literal, never converted to a
 *   float: "1300.50" stays "1300.50". A JSON string ("600") is not a number and is refused.
 *
 * Everything else is dead-lettered with one DeadLetterCode. Two codes are assigned later by the
 * bridge, not here: unknown_provider (the id is not in initial_data) and invalid_message_id (the AMQP
 * message_id is longer than 200 characters).
 */
import { isLosslessNumber, parse as parseLosslessJson } from 'lossless-json';

/** A transaction as it travels through the system: the amount stays an exact decimal string. */
export interface Transaction {
  providerId: number;
  /** Plain decimal literal exactly as the producer wrote it, e.g. "600", "-200", "12.34". */
  value: string;
}

export type DeadLetterCode =
  | 'oversize'
  | 'content_type'
  | 'content_encoding'
  | 'not_utf8'
  | 'invalid_json'
  | 'not_an_object'
  | 'missing_field'
  | 'unexpected_field'
  | 'invalid_id'
  | 'invalid_value'
  | 'unknown_provider'
  | 'invalid_message_id';

export type ParseResult =
  { ok: true; transaction: Transaction } | { ok: false; code: DeadLetterCode; reason: string };

export interface MessageEnvelope {
  body: Buffer;
  contentType?: string | undefined;
  contentEncoding?: string | undefined;
}

const MAX_INTEGER_DIGITS = 28;
const MAX_FRACTION_DIGITS = 18;
const MAX_PROVIDER_ID = 2_147_483_647; // historical_transactions.provider_id is INTEGER
const DECIMAL = /^-?(0|[1-9]\d*)(\.\d+)?$/;
const ACCEPTED_CONTENT_TYPES = new Set(['application/json', 'text/plain']);
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });
/**
 * Reasons travel in an AMQP header of the dead letter. amqplib encodes headers into a 64 KiB scratch
 * buffer, so a reason echoing a long field name from a large body would make the dead letter
 * unpublishable and leave the message unacked forever. Reasons are therefore kept short.
 */
const MAX_REASON_LENGTH = 300;

const reject = (code: DeadLetterCode, reason: string): ParseResult => ({
  ok: false,
  code,
  reason: truncate(reason, MAX_REASON_LENGTH),
});

/**
 * Validates one message body. Every input gives exactly one of two outcomes: a transaction whose
 * value is the body's decimal literal, unchanged, or a dead-letter code with a readable reason.
 * It never throws. Whether the provider exists is checked later, against Postgres.
 */
export function parseTransaction(message: MessageEnvelope, maxBytes: number): ParseResult {
  if (message.body.length > maxBytes) {
    return reject('oversize', `body is ${message.body.length} bytes; the limit is ${maxBytes}`);
  }
  const mediaType = message.contentType?.split(';')[0]?.trim().toLowerCase();
  if (mediaType && !ACCEPTED_CONTENT_TYPES.has(mediaType)) {
    return reject('content_type', `content-type ${JSON.stringify(mediaType)} is not application/json`);
  }
  const encoding = message.contentEncoding?.trim().toLowerCase();
  if (encoding && encoding !== 'identity' && encoding !== 'utf-8' && encoding !== 'utf8') {
    return reject('content_encoding', `content-encoding ${JSON.stringify(encoding)} is not supported`);
  }
  let text: string;
  try {
    text = utf8.decode(message.body);
  } catch {
    return reject('not_utf8', 'body is not valid UTF-8');
  }
  let parsed: unknown;
  try {
    parsed = parseLosslessJson(text);
  } catch (error) {
    return reject('invalid_json', `body is not valid JSON: ${(error as Error).message}`);
  }
  // A top-level number parses to a LosslessNumber object: it is not an object in JSON terms.
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed) || isLosslessNumber(parsed)) {
    return reject('not_an_object', `body must be a JSON object like {"id": 1, "value": 600}`);
  }
  const fields = Object.keys(parsed);
  const extra = fields.filter((field) => field !== 'id' && field !== 'value');
  if (extra.length > 0) {
    const shown = extra.slice(0, 5).map((field) => JSON.stringify(truncate(field, 40)));
    const more = extra.length > shown.length ? ` and ${extra.length - shown.length} more` : '';
    return reject('unexpected_field', `unexpected field(s): ${shown.join(', ')}${more}`);
  }
  for (const field of ['id', 'value'] as const) {
    if (!fields.includes(field)) return reject('missing_field', `field "${field}" is missing`);
  }
  const record = parsed as Record<'id' | 'value', unknown>;

  const id = record.id;
  if (!isLosslessNumber(id) || !/^[1-9]\d*$/.test(id.value) || Number(id.value) > MAX_PROVIDER_ID) {
    return reject('invalid_id', `"id" must be a positive integer up to ${MAX_PROVIDER_ID}`);
  }

  const value = record.value;
  if (!isLosslessNumber(value)) {
    return reject('invalid_value', `"value" must be a JSON number, not ${describe(value)}`);
  }
  const match = DECIMAL.exec(value.value);
  if (!match) {
    return reject(
      'invalid_value',
      `"value" must be a plain decimal (no exponent), got ${value.value.slice(0, 40)}`,
    );
  }
  const integerDigits = match[1]!.length;
  const fractionDigits = match[2] ? match[2].length - 1 : 0;
  if (integerDigits > MAX_INTEGER_DIGITS || fractionDigits > MAX_FRACTION_DIGITS) {
    return reject(
      'invalid_value',
      `"value" may have at most ${MAX_INTEGER_DIGITS} integer and ${MAX_FRACTION_DIGITS} fraction digits`,
    );
  }
  // The JSON parser refuses a repeated key only when the two values differ; {"value": 1, "value": 1}
  // would be merged silently. Here the object is known to hold just "id" and "value", both numbers,
  // and neither those keys nor number literals can contain a comma, so any comma beyond the one
  // between the two members means a key was repeated.
  if (text.split(',').length !== 2) {
    return reject('invalid_json', 'body repeats a key; "id" and "value" must each appear once');
  }
  return { ok: true, transaction: { providerId: Number(id.value), value: value.value } };
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  return `a ${typeof value}`;
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}
