import { describe, expect, it } from 'vitest';
import { classifyPostgresError, isOutage, onGeneratedKey, outageDependency } from '../../src/failures.js';

const withCode = (code: string | number, message = 'x') => Object.assign(new Error(message), { code });

describe('isOutage: which errors are retried for as long as they last', () => {
  it.each([
    [
      'Temporal unavailable (gRPC 14) under a ServiceError',
      new Error('Failed to start Workflow', { cause: withCode(14) }),
    ],
    ['a gRPC deadline (4)', withCode(4)],
    ['a reset gRPC stream (UNKNOWN, 2)', withCode(2, 'Received RST_STREAM')],
    ['Temporal UNAUTHENTICATED (16): an expired API key', withCode(16, 'Request unauthorized')],
    ['Temporal PERMISSION_DENIED (7): a revoked role', withCode(7)],
    ['RabbitMQ ACCESS_REFUSED (403)', withCode(403, 'ACCESS_REFUSED')],
    ['a refused TCP connection', withCode('ECONNREFUSED')],
    ['Postgres shutting down (57P01)', withCode('57P01')],
    ['a Postgres connection failure (08006)', withCode('08006')],
    ['a revoked Postgres grant (42501)', withCode('42501')],
    ['pg: Connection terminated unexpectedly', new Error('Connection terminated unexpectedly')],
    ['pg: Query read timeout (a hung socket)', new Error('Query read timeout')],
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
    ['a CHECK violation (23514)', withCode('23514')],
    ['a broker nack of a dead letter', new Error('message nacked')],
  ])('%s is not', (_name, error) => {
    expect(isOutage(error)).toBe(false);
  });

  it('names the dependency the error comes from', () => {
    expect(outageDependency(new Error('x', { cause: withCode(16) }))).toBe('temporal');
    expect(outageDependency(withCode('25006'))).toBe('postgres');
    expect(outageDependency(withCode(403))).toBe('rabbitmq');
    expect(outageDependency(withCode('ETIMEDOUT'))).toBe('network');
  });
});

describe('classifyPostgresError: the failure matrix table, class by class', () => {
  it.each([
    ['22003', 'refused', 'numeric_value_out_of_range'],
    ['22P02', 'refused', 'invalid_text_representation'],
    ['23502', 'refused', 'not_null_violation'],
    ['23503', 'refused', 'foreign_key_violation'],
    ['23505', 'refused', 'unique_violation (not the ledger: that one is absorbed first)'],
    ['23514', 'refused', 'check_violation'],
    ['23P01', 'refused', 'exclusion_violation'],
    ['27000', 'refused', 'triggered_data_change_violation'],
    ['44000', 'refused', 'with_check_option_violation'],
    ['P0001', 'refused', 'raise_exception in a trigger'],
    ['P0004', 'refused', 'assert_failure in a trigger'],
    ['08006', 'outage', 'connection_failure'],
    ['08001', 'outage', 'sqlclient_unable_to_establish_sqlconnection'],
    ['25006', 'outage', 'read_only_sql_transaction'],
    ['25P03', 'outage', 'idle_in_transaction_session_timeout'],
    ['28P01', 'outage', 'invalid_password'],
    ['28000', 'outage', 'invalid_authorization_specification'],
    ['3D000', 'outage', 'invalid_catalog_name'],
    ['3F000', 'outage', 'invalid_schema_name'],
    ['40001', 'outage', 'serialization_failure'],
    ['40P01', 'outage', 'deadlock_detected'],
    ['42501', 'outage', 'insufficient_privilege'],
    ['42P01', 'outage', 'undefined_table'],
    ['42703', 'outage', 'undefined_column'],
    ['42883', 'outage', 'undefined_function'],
    ['53100', 'outage', 'disk_full'],
    ['53300', 'outage', 'too_many_connections'],
    ['55P03', 'outage', 'lock_not_available'],
    ['57014', 'outage', 'query_canceled (statement_timeout)'],
    ['57P01', 'outage', 'admin_shutdown'],
    ['57P03', 'outage', 'cannot_connect_now'],
    ['58030', 'outage', 'io_error'],
    ['XX000', 'outage', 'internal_error'],
    ['42601', 'bug', 'syntax_error'],
    ['42804', 'bug', 'datatype_mismatch'],
    ['25P02', 'bug', 'in_failed_sql_transaction'],
    ['0A000', 'bug', 'feature_not_supported'],
    ['2F005', 'bug', 'function_executed_no_return_statement'],
    ['39P01', 'bug', 'trigger_protocol_violated'],
    ['54000', 'bug', 'program_limit_exceeded'],
  ])('%s is %s (%s)', (sqlstate, kind) => {
    expect(classifyPostgresError(withCode(sqlstate)).kind).toBe(kind);
  });

  it('gives the class, and a reason naming the server message, SQLSTATE and constraint', () => {
    const error = Object.assign(
      new Error('new row for relation "historical_transactions" violates check constraint "nonzero"'),
      { code: '23514', constraint: 'nonzero' },
    );
    expect(classifyPostgresError(error)).toEqual({
      kind: 'refused',
      sqlstate: '23514',
      sqlstateClass: '23',
      reason:
        'new row for relation "historical_transactions" violates check constraint "nonzero" (SQLSTATE 23514, constraint nonzero)',
    });
  });

  it('calls a duplicate of a key the database generates an outage naming the sequence and its fix', () => {
    const duplicate = () =>
      Object.assign(
        new Error('duplicate key value violates unique constraint "historical_transactions_pkey"'),
        {
          code: '23505',
          constraint: 'historical_transactions_pkey',
        },
      );
    const behind = onGeneratedKey(duplicate(), {
      table: 'historical_transactions',
      column: 'id',
      sequence: 'public.historical_transactions_id_seq',
    });
    expect(classifyPostgresError(behind)).toEqual({
      kind: 'outage',
      sqlstate: '23505',
      sqlstateClass: '23',
      reason:
        'sequence public.historical_transactions_id_seq is behind historical_transactions.id (restored or reset?): ' +
        'duplicate key value violates unique constraint "historical_transactions_pkey" (SQLSTATE 23505, ' +
        "constraint historical_transactions_pkey); fix: SELECT setval('public.historical_transactions_id_seq', " +
        '(SELECT max(id) FROM historical_transactions))',
    });
    expect(outageDependency(new Error('insert failed', { cause: behind }))).toBe('postgres');
    // The same violation on any other unique key (one an operator added) stays this row's refusal.
    expect(classifyPostgresError(duplicate()).kind).toBe('refused');
    expect(isOutage(duplicate())).toBe(false);
  });

  it('calls a client-side network error an outage and anything else a bug, with class none', () => {
    expect(classifyPostgresError(withCode('ECONNREFUSED', 'connect ECONNREFUSED'))).toMatchObject({
      kind: 'outage',
      sqlstateClass: 'none',
    });
    expect(classifyPostgresError(new TypeError('oops'))).toMatchObject({
      kind: 'bug',
      sqlstateClass: 'none',
    });
  });
});
