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

const reject = (code: DeadLetterCode, reason: string): ParseResult => ({ ok: false, code, reason });

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
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    return reject('not_an_object', `body must be a JSON object like {"id": 1, "value": 600}`);
  }
  const fields = Object.keys(parsed);
  const extra = fields.filter((field) => field !== 'id' && field !== 'value');
  if (extra.length > 0) {
    return reject(
      'unexpected_field',
      `unexpected field(s): ${extra.map((f) => JSON.stringify(f)).join(', ')}`,
    );
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
  return { ok: true, transaction: { providerId: Number(id.value), value: value.value } };
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return `a ${typeof value}`;
}
