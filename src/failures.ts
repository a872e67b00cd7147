/**
 * What an error from a dependency means, decided in this one place (docs/FAILURE-MATRIX.md, "What an error means"):
 * - `refused`: Postgres will never write this row (its data breaks a type, constraint or trigger);
 * - `outage`: the dependency cannot be used now (down, overloaded, read-only, a revoked grant or
 *   credential, a lock, a schema changed under us, a key sequence left behind by a restore); it hits
 *   every message, so it is retried, loudly;
 * - `bug`: anything else (our SQL or code is wrong); retried a bounded number of times.
 */
export type FailureKind = 'refused' | 'outage' | 'bug';

export interface PostgresFailure {
  kind: FailureKind;
  /** The SQLSTATE, if the server sent one. */
  sqlstate?: string;
  /** The SQLSTATE's class (first two characters), or `none` for a client-side error. */
  sqlstateClass: string;
  /** One line for a log or a dead letter: the server's message, SQLSTATE and constraint. */
  reason: string;
}

// Checked in order: the first matching prefix decides.
const SQLSTATE_KINDS: readonly (readonly [string, FailureKind])[] = [
  ['25006', 'outage'], // read_only_sql_transaction: a replica, or default_transaction_read_only
  ['25P03', 'outage'], // idle_in_transaction_session_timeout
  ['42501', 'outage'], // insufficient_privilege: a revoked grant (also an RLS policy)
  ['42P01', 'outage'], // undefined_table: a table dropped or renamed while we run
  ['42703', 'outage'], // undefined_column
  ['42883', 'outage'], // undefined_function: a trigger function dropped
  ['3D', 'outage'], // invalid_catalog_name: the database is gone
  ['3F', 'outage'], // invalid_schema_name
  ['08', 'outage'], // connection exception
  ['28', 'outage'], // invalid authorization: a changed password, pg_hba
  ['40', 'outage'], // transaction rollback: serialization failure, deadlock
  ['53', 'outage'], // insufficient resources: disk full, too many connections
  ['55', 'outage'], // object not in prerequisite state: lock_not_available
  ['57', 'outage'], // operator intervention: statement timeout, admin shutdown, cannot connect now
  ['58', 'outage'], // system error: I/O
  ['XX', 'outage'], // internal error, data corrupted
  ['22', 'refused'], // data exception: the value does not fit the column
  ['23', 'refused'], // integrity constraint: CHECK, NOT NULL, foreign key, unique, exclusion (but see GeneratedKey)
  ['27', 'refused'], // triggered_data_change_violation
  ['44', 'refused'], // with_check_option_violation
  ['P0', 'refused'], // PL/pgSQL RAISE EXCEPTION or ASSERT in a trigger: it refuses the row
];

// Errors of the client (pg, node) that mean the server is unreachable, slow or went away.
const NETWORK_MESSAGE =
  /Connection terminated|timeout exceeded when trying to connect|Query read timeout|socket hang up|Failed to connect|ECONNREFUSED|ECONNRESET|Client has encountered a connection error/i;
// System errors (ECONNREFUSED, ETIMEDOUT, …), not Node's own ERR_* codes, which mean a bug.
const SYSTEM_ERROR_CODE = /^E(?!RR_)[A-Z_]+$/;
const SQLSTATE = /^[0-9A-Z]{5}$/;

/**
 * A unique key whose only column the database fills from a sequence (`pg_get_serial_sequence`). A
 * duplicate there is not the row's fault: the sequence is behind the table (a restore, a `setval`),
 * and every new row fails alike until it is set past the highest value.
 */
export interface GeneratedKey {
  /** The table, as `regclass` prints it. */
  table: string;
  /** The column, quoted as an identifier where needed. */
  column: string;
  /** The sequence, as `pg_get_serial_sequence` names it. */
  sequence: string;
}

const UNIQUE_VIOLATION = '23505';

/** Marks a unique violation (23505) as a duplicate of a key the database generated (see GeneratedKey). */
export function onGeneratedKey<E extends object>(
  error: E,
  key: GeneratedKey,
): E & { generatedKey: GeneratedKey } {
  return Object.assign(error, { generatedKey: key });
}

/** What a failed Postgres query means for the row it tried to write. */
export function classifyPostgresError(error: unknown): PostgresFailure {
  const { code, message, constraint, generatedKey } = (error ?? {}) as {
    code?: unknown;
    message?: unknown;
    constraint?: unknown;
    generatedKey?: GeneratedKey;
  };
  const text = typeof message === 'string' ? message : String(error);
  if (typeof code === 'string' && SQLSTATE.test(code) && !SYSTEM_ERROR_CODE.test(code)) {
    const kind = SQLSTATE_KINDS.find(([prefix]) => code.startsWith(prefix))?.[1] ?? 'bug';
    const named = typeof constraint === 'string' ? `, constraint ${constraint}` : '';
    const failure = { sqlstate: code, sqlstateClass: code.slice(0, 2) };
    if (code === UNIQUE_VIOLATION && generatedKey) {
      const { table, column, sequence } = generatedKey;
      return {
        ...failure,
        kind: 'outage',
        reason:
          `sequence ${sequence} is behind ${table}.${column} (restored or reset?): ${text} ` +
          `(SQLSTATE ${code}${named}); fix: SELECT setval('${sequence}', (SELECT max(${column}) FROM ${table}))`,
      };
    }
    return { ...failure, kind, reason: `${text} (SQLSTATE ${code}${named})` };
  }
  return { kind: isOutage(error) ? 'outage' : 'bug', sqlstateClass: 'none', reason: text };
}

// gRPC: CANCELLED, UNKNOWN, DEADLINE_EXCEEDED, PERMISSION_DENIED, RESOURCE_EXHAUSTED, ABORTED,
// INTERNAL, UNAVAILABLE, UNAUTHENTICATED. grpc-js reports a dropped or reset transport (a server
// restart) as UNKNOWN or INTERNAL too; an expired API key or a revoked role hits every call alike.
const GRPC_OUTAGE_CODES = new Set([1, 2, 4, 7, 8, 10, 13, 14, 16]);
// AMQP: CONNECTION_FORCED, ACCESS_REFUSED (a revoked permission), RESOURCE_ERROR, INTERNAL_ERROR.
const AMQP_OUTAGE_CODES = new Set([320, 403, 506, 541]);

/**
 * True if the error (or a cause) says a dependency is unreachable, overloaded or refuses us
 * (credentials, permissions), not that the input or our code is wrong: Temporal gRPC codes, AMQP
 * reply codes, Postgres SQLSTATEs (as classifyPostgresError) and network errors.
 */
export function isOutage(error: unknown): boolean {
  return outageDependency(error) !== undefined;
}

/** Which dependency an outage error comes from, as far as the error itself says; undefined if none. */
export function outageDependency(
  error: unknown,
): 'temporal' | 'rabbitmq' | 'postgres' | 'network' | undefined {
  for (let current = error, depth = 0; current && depth < 5; depth++) {
    const { code, message, cause } = current as { code?: unknown; message?: unknown; cause?: unknown };
    if (typeof code === 'number' && GRPC_OUTAGE_CODES.has(code)) return 'temporal';
    if (typeof code === 'number' && AMQP_OUTAGE_CODES.has(code)) return 'rabbitmq';
    if (typeof code === 'string' && SYSTEM_ERROR_CODE.test(code)) return 'network';
    if (typeof code === 'string' && SQLSTATE.test(code) && classifyPostgresError(current).kind === 'outage')
      return 'postgres';
    if (typeof message === 'string' && NETWORK_MESSAGE.test(message)) return 'network';
    current = cause;
  }
  return undefined;
}
