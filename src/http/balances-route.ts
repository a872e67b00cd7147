import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { classifyPostgresError } from '../failures.js';
import {
  HistoryGapError,
  NoPublicationError,
  parseInstant,
  type BalancesAt,
} from '../history/balance-history.js';

/** GET /balances: the balance history over HTTP, for holders of BALANCES_API_TOKEN. */
export interface BalancesRoute {
  token: string;
  /** What KeyDB held at `at` (throws NoPublicationError before the first recorded publication). */
  balancesAt(at: Date, key?: string): Promise<BalancesAt>;
}

export interface RouteAnswer {
  status: number;
  body: string;
  headers?: Record<string, string>;
}

// invalid_datetime_format, datetime_field_overflow, invalid_time_zone_displacement_value: Postgres
// refusing the time asked about (parseInstant should have refused it first).
const DATETIME_SQLSTATES = new Set(['22007', '22008', '22009']);

const digest = (text: string) => createHash('sha256').update(text).digest();

/** Equal-length digests, so neither the comparison nor its length check leaks the token. */
function authorized(request: IncomingMessage, token: string): boolean {
  const header = request.headers.authorization ?? '';
  const presented = /^Bearer (.+)$/i.exec(header)?.[1] ?? '';
  return timingSafeEqual(digest(presented), digest(token));
}

const json = (status: number, value: unknown, headers?: Record<string, string>): RouteAnswer => ({
  status,
  body: JSON.stringify(value),
  ...(headers ? { headers } : {}),
});

/**
 * 401 without the right bearer token; 400 with the reason for a bad `at` (Postgres's refusal of a
 * time included, without its text); 404 before the first recorded publication, and with the gap's
 * `from` and `to` where a write that may have been applied was not recorded; else 200 with
 * {minute, publishedAt, balances}. Only GET.
 */
export async function answerBalances(request: IncomingMessage, route: BalancesRoute): Promise<RouteAnswer> {
  if (!authorized(request, route.token)) {
    return json(401, { error: 'missing or wrong bearer token' }, { 'www-authenticate': 'Bearer' });
  }
  if (request.method !== 'GET') return json(405, { error: 'only GET' }, { allow: 'GET' });
  const query = new URL(request.url ?? '/', 'http://localhost').searchParams;
  const at = parseInstant(query.get('at'));
  if (typeof at === 'string') return json(400, { error: `at: ${at}` });
  const key = query.get('key');
  if (key === '') return json(400, { error: 'key: empty (a key is <id>_<name>, e.g. 1_Visa)' });
  try {
    return json(200, await route.balancesAt(at, key ?? undefined));
  } catch (error) {
    if (error instanceof HistoryGapError) {
      return json(404, { error: error.message, gap: { from: error.from, to: error.to } });
    }
    if (error instanceof NoPublicationError) return json(404, { error: error.message });
    // Postgres's own text would echo internals: the answer names only the parameter.
    const { sqlstate } = classifyPostgresError(error);
    if (sqlstate && DATETIME_SQLSTATES.has(sqlstate)) {
      return json(400, { error: 'at: not a time the balance history can look up' });
    }
    throw error;
  }
}
