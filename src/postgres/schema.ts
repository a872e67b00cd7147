import type pg from 'pg';

/** Tables the original producer owns; the app waits for them and never creates them. */
export const PRODUCER_TABLES = ['initial_data', 'historical_transactions'] as const;

/** One advisory lock serialises migrations, trigger installs and reconciliation across instances. */
export const BALANCE_LOCK_KEY = 0x62616c73; // "bals"

const TRIGGER_NAMES = [
  'balance_sync_after_insert',
  'balance_sync_after_update',
  'balance_sync_after_delete',
  'balance_sync_after_truncate',
];

/** SQL that counts our enabled triggers on the current historical_transactions table. */
export const COUNT_BALANCE_TRIGGERS_SQL = `
  SELECT count(*)::int FROM pg_trigger
  WHERE tgrelid = 'historical_transactions'::regclass AND tgenabled <> 'D'
    AND tgname = ANY ('{${TRIGGER_NAMES.join(',')}}'::text[])`;

/** A NUMERIC that is a number: NaN and ±Infinity (PostgreSQL 14+) are kept out of the running sums. */
const finite = (column: string) => `${column} NOT IN ('NaN', 'Infinity', '-Infinity')`;

/** Per provider: the sum of its finite values, and how many non-finite values it has. */
const SUMS_OF = (rows: string, sign = '') => `
    SELECT provider_id, ${sign}coalesce(sum(transaction_value) FILTER (WHERE ${finite('transaction_value')}), 0),
           ${sign}count(*) FILTER (WHERE NOT ${finite('transaction_value')})
    FROM ${rows} WHERE provider_id IS NOT NULL GROUP BY provider_id`;

const ADD_TO_SUMS = `
    ON CONFLICT (provider_id) DO UPDATE
    SET tx_sum = s.tx_sum + EXCLUDED.tx_sum, nonfinite_rows = s.nonfinite_rows + EXCLUDED.nonfinite_rows`;

// Balance history (src/activities/record-publication.ts writes it, src/history/balance-history.ts
// reads it). One row per KeyDB write that was recorded; `instant` is when KeyDB applied it, by KeyDB's
// own TIME (the fence's), and `minute` the minute it published (NULL on demand). Rows recorded by
// earlier versions keep their instant: the minute, or the worker's clock for an on-demand write.
// Only the keys whose value changed are stored, NULL = removed;
// balance_current holds every key's latest recorded value, so a publication is diffed in O(keys).
// A checkpoint is every live key's value at one publication's instant, written whenever the changes
// since the last one reach the number of keys: "as of" reads one checkpoint plus at most that many
// changes, and checkpoints never take more room than the changes they summarise.
const BALANCE_HISTORY_TABLES = `
  CREATE TABLE IF NOT EXISTS balance_sync_publications (
    instant         timestamptz PRIMARY KEY,
    minute          timestamptz UNIQUE,
    boundary        timestamptz,
    written_at      timestamptz NOT NULL,
    write_offset_ms double precision,
    workflow_id     text NOT NULL,
    run_id          text NOT NULL,
    attempt         integer NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
  );
  -- The fence's writer (run/activity/attempt); NULL for rows recorded before it was kept. Checked
  -- first, as for body_sha256: ALTER TABLE takes a lock even when it changes nothing.
  DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'balance_sync_publications'::regclass
                   AND attname = 'writer' AND NOT attisdropped) THEN
      ALTER TABLE balance_sync_publications ADD COLUMN writer text;
    END IF;
  END $$;
  -- A KeyDB write noted before it is sent, until its outcome is known: recorded (applied) or proven
  -- not applied. KeyDB can have applied it only between the two instants (KeyDB's clock; the fence
  -- refuses it after its deadline), so while a row stays the history answers nothing from
  -- may_apply_from to the first publication after may_apply_until: a gap, never a value KeyDB may
  -- not have held.
  CREATE TABLE IF NOT EXISTS balance_sync_unconfirmed_writes (
    writer           text PRIMARY KEY,
    minute           timestamptz,
    may_apply_from   timestamptz NOT NULL,
    may_apply_until  timestamptz NOT NULL,
    noted_at         timestamptz NOT NULL DEFAULT now()
  );
  CREATE INDEX IF NOT EXISTS balance_sync_unconfirmed_writes_span ON balance_sync_unconfirmed_writes
    USING gist (tstzrange(may_apply_from, may_apply_until, '[]'));
  CREATE TABLE IF NOT EXISTS balance_sync_balance_changes (
    key     text NOT NULL,
    instant timestamptz NOT NULL,
    value   text,
    PRIMARY KEY (key, instant)
  );
  CREATE INDEX IF NOT EXISTS balance_sync_balance_changes_instant ON balance_sync_balance_changes (instant);
  CREATE TABLE IF NOT EXISTS balance_sync_balance_current (
    key     text PRIMARY KEY,
    value   text,
    instant timestamptz NOT NULL
  );
  CREATE TABLE IF NOT EXISTS balance_sync_balance_checkpoints (
    instant  timestamptz PRIMARY KEY,
    balances jsonb NOT NULL
  );`;

const APP_TABLES = `
  CREATE TABLE IF NOT EXISTS balance_sync_ingest_ledger (
    ingest_key     text PRIMARY KEY,
    transaction_id integer NOT NULL,
    ingested_at    timestamptz NOT NULL DEFAULT now()
  );
  -- sha256 of the message body (NULL for entries written before it was recorded). Checked first:
  -- ALTER TABLE would lock the ledger against other instances' inserts even when it changes nothing.
  DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'balance_sync_ingest_ledger'::regclass
                   AND attname = 'body_sha256' AND NOT attisdropped) THEN
      ALTER TABLE balance_sync_ingest_ledger ADD COLUMN body_sha256 text;
    END IF;
  END $$;
  -- tx_sum holds the sum of finite values only; NaN/Infinity rows are counted in nonfinite_rows,
  -- so deleting such a row makes the provider exact again (NaN - NaN would stay NaN).
  CREATE TABLE IF NOT EXISTS balance_sync_provider_sums (
    provider_id    integer PRIMARY KEY,
    tx_sum         numeric NOT NULL,
    nonfinite_rows bigint NOT NULL DEFAULT 0
  );
  -- IngestTransaction runs an operator terminated or deleted, whose message was dead-lettered
  -- (src/after-ack/terminated-runs.ts): each is dead-lettered once.
  CREATE TABLE IF NOT EXISTS balance_sync_terminated_runs (
    workflow_id       text NOT NULL,
    run_id            text NOT NULL,
    dead_lettered_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, run_id)
  );
  -- Runs still running 10 s after their start, with their message, so that one deleted from
  -- Temporal can still be dead-lettered (src/after-ack/vanished-runs.ts).
  CREATE TABLE IF NOT EXISTS balance_sync_watched_runs (
    workflow_id  text NOT NULL,
    run_id       text NOT NULL,
    original     jsonb NOT NULL,
    watched_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, run_id)
  );
  CREATE TABLE IF NOT EXISTS balance_sync_published_keys (
    key text PRIMARY KEY
  );
  -- One row: the latest minute boundary whose balances reached KeyDB. A retried publishBalances
  -- attempt reads it so that a minute is written at most once (src/activities/publish-balances.ts).
  CREATE TABLE IF NOT EXISTS balance_sync_sync_state (
    singleton               boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_published_boundary timestamptz NOT NULL
  );
${BALANCE_HISTORY_TABLES}`;

/** The four trigger functions, each with the one statement it runs on `sums` (a qualified table name). */
const TRIGGER_FUNCTIONS = (sums: string) => ({
  balance_sync_add_rows: `
    INSERT INTO ${sums} AS s (provider_id, tx_sum, nonfinite_rows)
    ${SUMS_OF('balance_sync_new_rows')} ORDER BY provider_id
    ${ADD_TO_SUMS};`,
  balance_sync_subtract_rows: `
    INSERT INTO ${sums} AS s (provider_id, tx_sum, nonfinite_rows)
    ${SUMS_OF('balance_sync_old_rows', '-')} ORDER BY provider_id
    ${ADD_TO_SUMS};`,
  balance_sync_replace_rows: `
    INSERT INTO ${sums} AS s (provider_id, tx_sum, nonfinite_rows)
    SELECT provider_id, sum(tx_sum), sum(nonfinite_rows) FROM (
      ${SUMS_OF('balance_sync_new_rows')}
      UNION ALL
      ${SUMS_OF('balance_sync_old_rows', '-')}
    ) changes (provider_id, tx_sum, nonfinite_rows)
    GROUP BY provider_id ORDER BY provider_id
    ${ADD_TO_SUMS};`,
  balance_sync_clear_rows: `
    UPDATE ${sums} SET tx_sum = 0, nonfinite_rows = 0;`,
});

/** The schema provider_sums was created in (the connection's current schema), quoted for SQL. */
const APP_SCHEMA = `
  SELECT quote_ident(n.nspname) AS schema FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.oid = 'balance_sync_provider_sums'::regclass`;

/**
 * Statement-level triggers keep provider_sums equal to the per-provider SUM of finite
 * transaction_values (and the count of the others) for every writer of historical_transactions (this
 * app, the producer's seed, manual SQL), in the writer's own transaction. Rows are locked in provider
 * order to avoid deadlocks.
 * The functions run as their owner, the migrating role (SECURITY DEFINER), so a writer that may only
 * INSERT into historical_transactions still updates the sums. Against hijacking: search_path holds
 * only pg_catalog and pg_temp (last), the sums table is schema-qualified (transition tables are
 * resolved before any schema), and PUBLIC may not EXECUTE them, so nobody attaches them to a table
 * of their own (firing a trigger needs no EXECUTE). CREATE OR REPLACE turns an older SECURITY
 * INVOKER definition into this one, in place; OWNER TO takes them over from a role the migrating
 * role belongs to (one that ran an earlier migration), whose rights they would otherwise run with.
 */
function triggerFunctionsSql(schema: string): string {
  return Object.entries(TRIGGER_FUNCTIONS(`${schema}.balance_sync_provider_sums`))
    .map(
      ([name, statement]) => `
  CREATE OR REPLACE FUNCTION ${schema}.${name}() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  BEGIN${statement}
    RETURN NULL;
  END $$;
  ALTER FUNCTION ${schema}.${name}() OWNER TO CURRENT_USER;
  REVOKE EXECUTE ON FUNCTION ${schema}.${name}() FROM PUBLIC;`,
    )
    .join('');
}

/** The exact per-provider aggregate the running sums must equal (also what reconciliation compares). */
export const FULL_PROVIDER_SUMS = SUMS_OF('historical_transactions');

/** provider_sums from a version without nonfinite_rows (the column is added, then the sums recounted). */
const LACKS_NONFINITE_COLUMN = `
  SELECT to_regclass('balance_sync_provider_sums') IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM pg_attribute
    WHERE attrelid = to_regclass('balance_sync_provider_sums') AND attname = 'nonfinite_rows' AND NOT attisdropped
  ) AS lacks`;
const ADD_NONFINITE_COLUMN = `
  ALTER TABLE balance_sync_provider_sums ADD COLUMN IF NOT EXISTS nonfinite_rows bigint NOT NULL DEFAULT 0`;

/** Sums written by a version that added NaN/Infinity into tx_sum: they need a full recount. */
const POISONED_SUMS = `
  SELECT EXISTS (SELECT 1 FROM balance_sync_provider_sums WHERE NOT ${finite('tx_sum')}) AS poisoned`;

const LOCK_WRITERS_OUT = 'LOCK TABLE historical_transactions IN SHARE ROW EXCLUSIVE MODE';

const INSTALL_TRIGGERS = `
  DROP TRIGGER IF EXISTS balance_sync_after_insert ON historical_transactions;
  DROP TRIGGER IF EXISTS balance_sync_after_update ON historical_transactions;
  DROP TRIGGER IF EXISTS balance_sync_after_delete ON historical_transactions;
  DROP TRIGGER IF EXISTS balance_sync_after_truncate ON historical_transactions;
  CREATE TRIGGER balance_sync_after_insert AFTER INSERT ON historical_transactions
    REFERENCING NEW TABLE AS balance_sync_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balance_sync_add_rows();
  CREATE TRIGGER balance_sync_after_update AFTER UPDATE ON historical_transactions
    REFERENCING OLD TABLE AS balance_sync_old_rows NEW TABLE AS balance_sync_new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balance_sync_replace_rows();
  CREATE TRIGGER balance_sync_after_delete AFTER DELETE ON historical_transactions
    REFERENCING OLD TABLE AS balance_sync_old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION balance_sync_subtract_rows();
  CREATE TRIGGER balance_sync_after_truncate AFTER TRUNCATE ON historical_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION balance_sync_clear_rows();
  -- Start from the exact aggregate; writers are blocked by the lock below until commit.
  DELETE FROM balance_sync_provider_sums;
  INSERT INTO balance_sync_provider_sums (provider_id, tx_sum, nonfinite_rows) ${FULL_PROVIDER_SUMS};`;

/**
 * Applies the app's own idempotent migrations. Safe to run from several instances at once.
 * Installs the balance triggers (and recomputes the sums) only when they are missing, e.g. on first
 * start or after the producer recreated historical_transactions, or when a sum is NaN/Infinity (left
 * by a version that summed non-finite values). Returns whether it installed them.
 */
export async function migrate(pool: pg.Pool): Promise<{ installedTriggers: boolean }> {
  const client = await pool.connect();
  let failure: Error | undefined;
  try {
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock($1)', [BALANCE_LOCK_KEY]);
    const upgrade = (await client.query<{ lacks: boolean }>(LACKS_NONFINITE_COLUMN)).rows[0]?.lacks === true;
    if (upgrade) {
      // Writers lock historical_transactions, then provider_sums: take them in that order too.
      await client.query(LOCK_WRITERS_OUT);
      await client.query(ADD_NONFINITE_COLUMN);
    }
    await client.query(APP_TABLES);
    const schema = (await client.query<{ schema: string }>(APP_SCHEMA)).rows[0]?.schema;
    if (schema === undefined) throw new Error('balance_sync_provider_sums has no schema');
    await client.query(triggerFunctionsSql(schema));
    const { rows } = await client.query<{ count: number }>(COUNT_BALANCE_TRIGGERS_SQL);
    const poisoned = (await client.query<{ poisoned: boolean }>(POISONED_SUMS)).rows[0]?.poisoned;
    const installedTriggers = rows[0]?.count !== TRIGGER_NAMES.length || poisoned === true || upgrade;
    if (installedTriggers) {
      await client.query(LOCK_WRITERS_OUT);
      await client.query(INSTALL_TRIGGERS);
    }
    await client.query('COMMIT');
    return { installedTriggers };
  } catch (error) {
    failure = error as Error;
    throw error;
  } finally {
    // A failed client is destroyed (its transaction ends with it), never handed back mid-transaction.
    client.release(failure);
  }
}

export const EXPECTED_TRIGGER_COUNT = TRIGGER_NAMES.length;

/** Which of the producer's tables are missing. */
export async function missingProducerTables(pool: pg.Pool): Promise<string[]> {
  const { rows } = await pool.query<{ name: string }>(
    `SELECT name FROM unnest($1::text[]) AS name WHERE to_regclass(name) IS NULL`,
    [PRODUCER_TABLES],
  );
  return rows.map((row) => row.name);
}
