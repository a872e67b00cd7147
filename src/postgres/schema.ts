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
  CREATE TABLE IF NOT EXISTS balance_sync_provider_sums (
    provider_id integer PRIMARY KEY,
    tx_sum      numeric NOT NULL
  );
  CREATE TABLE IF NOT EXISTS balance_sync_published_keys (
    key text PRIMARY KEY
  );

  -- Statement-level triggers keep provider_sums equal to SUM(transaction_value) per provider for
  -- every writer of historical_transactions (this app, the producer's seed, manual SQL), in the
  -- writer's own transaction. Rows are locked in provider order to avoid deadlocks.
  CREATE OR REPLACE FUNCTION balance_sync_add_rows() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    INSERT INTO balance_sync_provider_sums AS s (provider_id, tx_sum)
    SELECT provider_id, sum(transaction_value) FROM balance_sync_new_rows
    WHERE provider_id IS NOT NULL GROUP BY provider_id ORDER BY provider_id
    ON CONFLICT (provider_id) DO UPDATE SET tx_sum = s.tx_sum + EXCLUDED.tx_sum;
    RETURN NULL;
  END $$;
  CREATE OR REPLACE FUNCTION balance_sync_subtract_rows() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    INSERT INTO balance_sync_provider_sums AS s (provider_id, tx_sum)
    SELECT provider_id, -sum(transaction_value) FROM balance_sync_old_rows
    WHERE provider_id IS NOT NULL GROUP BY provider_id ORDER BY provider_id
    ON CONFLICT (provider_id) DO UPDATE SET tx_sum = s.tx_sum + EXCLUDED.tx_sum;
    RETURN NULL;
  END $$;
  CREATE OR REPLACE FUNCTION balance_sync_replace_rows() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    INSERT INTO balance_sync_provider_sums AS s (provider_id, tx_sum)
    SELECT provider_id, sum(delta) FROM (
      SELECT provider_id, transaction_value AS delta FROM balance_sync_new_rows
      UNION ALL
      SELECT provider_id, -transaction_value FROM balance_sync_old_rows
    ) changes
    WHERE provider_id IS NOT NULL GROUP BY provider_id ORDER BY provider_id
    ON CONFLICT (provider_id) DO UPDATE SET tx_sum = s.tx_sum + EXCLUDED.tx_sum;
    RETURN NULL;
  END $$;
  CREATE OR REPLACE FUNCTION balance_sync_clear_rows() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    UPDATE balance_sync_provider_sums SET tx_sum = 0;
    RETURN NULL;
  END $$;`;

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
  INSERT INTO balance_sync_provider_sums (provider_id, tx_sum)
  SELECT provider_id, sum(transaction_value) FROM historical_transactions
  WHERE provider_id IS NOT NULL GROUP BY provider_id;`;

/**
 * Applies the app's own idempotent migrations. Safe to run from several instances at once.
 * Installs the balance triggers (and recomputes the sums) only when they are missing, e.g. on first
 * start or after the producer recreated historical_transactions. Returns whether it installed them.
 */
export async function migrate(pool: pg.Pool): Promise<{ installedTriggers: boolean }> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock($1)', [BALANCE_LOCK_KEY]);
    await client.query(APP_TABLES);
    const { rows } = await client.query<{ count: number }>(COUNT_BALANCE_TRIGGERS_SQL);
    const installedTriggers = rows[0]?.count !== TRIGGER_NAMES.length;
    if (installedTriggers) {
      await client.query('LOCK TABLE historical_transactions IN SHARE ROW EXCLUSIVE MODE');
      await client.query(INSTALL_TRIGGERS);
    }
    await client.query('COMMIT');
    return { installedTriggers };
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  } finally {
    client.release();
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
