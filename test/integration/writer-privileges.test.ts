import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../../src/app.js';
import type { Config } from '../../src/config.js';
import { FULL_PROVIDER_SUMS, migrate } from '../../src/postgres/schema.js';
import {
  keyChangedAt,
  nextScheduledBoundary,
  PRODUCER_FIXTURE,
  rows,
  startTestApp,
  stopTestApp,
  testConfig,
} from '../support/harness.js';
import {
  startThrowawayPostgres,
  startThrowawayRedis,
  type ThrowawayService,
} from '../support/throwaway-services.js';

/**
 * Writers of historical_transactions that hold no right on the app's tables: docs/OPERATIONS.md's
 * least-privilege producer (SELECT, INSERT and the sequence) and roles with only UPDATE or DELETE.
 * The balance triggers run as their owner, so these writes count. Roles are cluster-wide, so this
 * file has a Postgres of its own (the shared `user` may not create roles); the app runs as a
 * non-superuser that owns the database, as compose's `user` does.
 */
describe('Writers with only their own grants on historical_transactions', () => {
  let postgres: ThrowawayService;
  let redis: ThrowawayService;
  let appDb: pg.Pool;
  let keydb: Redis;
  let config: Config;
  let app: App;
  const urlAs = (role: string, database = 'fxc') => {
    const url = new URL(postgres.url);
    url.username = role;
    url.pathname = `/${database}`;
    return url.toString();
  };
  /** One statement in a session of its own as `role`. */
  const asRole = async (role: string, sql: string, params: unknown[] = []) => {
    const client = new pg.Client({ connectionString: urlAs(role) });
    await client.connect();
    try {
      return (await client.query(sql, params)).rows as Record<string, unknown>[];
    } finally {
      await client.end();
    }
  };
  const insertAsProducer = (value: string) =>
    asRole(
      'producer',
      'INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (1, $1)',
      [value],
    );
  /** The running sums and the full aggregate, which must be equal. */
  const sumsAndAggregate = async () => ({
    sums: await rows(
      appDb,
      'SELECT provider_id, tx_sum, nonfinite_rows FROM balance_sync_provider_sums ORDER BY 1',
    ),
    aggregate: await rows(
      appDb,
      `SELECT * FROM (${FULL_PROVIDER_SUMS}) a (provider_id, tx_sum, nonfinite_rows) ORDER BY 1`,
    ),
  });

  beforeAll(async () => {
    [postgres, redis] = await Promise.all([startThrowawayPostgres(), startThrowawayRedis()]);
    const admin = new pg.Client({ connectionString: postgres.url });
    await admin.connect();
    await admin.query(`CREATE ROLE app LOGIN; CREATE ROLE producer LOGIN;
                       CREATE ROLE updater LOGIN; CREATE ROLE deleter LOGIN`);
    await admin.query('CREATE DATABASE fxc OWNER app');
    // A role that ran an earlier migration; the app's role is a member of it, as after a hand-over.
    await admin.query('CREATE ROLE former_migrator; GRANT former_migrator TO app');
    await admin.end();
    appDb = new pg.Pool({ connectionString: urlAs('app'), max: 2 });
    await appDb.query(PRODUCER_FIXTURE);
    await appDb.query(`
      GRANT SELECT, INSERT ON historical_transactions TO producer;
      GRANT USAGE ON SEQUENCE historical_transactions_id_seq TO producer;
      GRANT SELECT, UPDATE ON historical_transactions TO updater;
      GRANT SELECT, DELETE ON historical_transactions TO deleter;`);
    keydb = new Redis(redis.url);
    config = testConfig({ DATABASE_URL: urlAs('app'), KEYDB_URL: redis.url });
    app = await startTestApp(config);
  });

  afterAll(async () => {
    try {
      await stopTestApp(app, config);
      keydb?.disconnect();
      await appDb?.end();
    } finally {
      await Promise.all([postgres?.stop(), redis?.stop()]);
    }
  });

  it('refuses the producer under the old SECURITY INVOKER functions; migrate upgrades them in place', async () => {
    // The definition of the version before, owned by the role that migrated then.
    await asRole(
      'postgres',
      `ALTER FUNCTION balance_sync_add_rows() SECURITY INVOKER RESET search_path;
       ALTER FUNCTION balance_sync_add_rows() OWNER TO former_migrator`,
    );
    await expect(insertAsProducer('7')).rejects.toThrow(
      /permission denied for table balance_sync_provider_sums/,
    );

    await migrate(appDb);
    await insertAsProducer('7');
    const { sums, aggregate } = await sumsAndAggregate();
    expect(sums).toEqual(aggregate);
    expect(sums[0]).toMatchObject({ provider_id: 1, tx_sum: '307' });
    // Each function is now SECURITY DEFINER, owned by the role that migrated, whose rights it runs with.
    expect(
      await rows(
        appDb,
        `SELECT DISTINCT prosecdef, proconfig, proowner::regrole::text AS owner, proacl::text AS acl
         FROM pg_proc WHERE proname LIKE 'balance\\_sync\\_%\\_rows'`,
      ),
    ).toEqual([
      { prosecdef: true, proconfig: ['search_path=pg_catalog, pg_temp'], owner: 'app', acl: '{app=X/app}' },
    ]);
  });

  it('keeps the sums for a writer whose temp table or search_path names another balance_sync_provider_sums', async () => {
    const client = new pg.Client({ connectionString: urlAs('producer') });
    await client.connect();
    try {
      // A temp table is found before any schema by an unqualified name; an empty search_path finds none.
      await client.query(`CREATE TEMP TABLE balance_sync_provider_sums
                          (provider_id integer PRIMARY KEY, tx_sum numeric, nonfinite_rows bigint)`);
      await client.query(
        'INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (2, 5)',
      );
      await client.query('SET search_path = pg_catalog');
      await client.query(
        'INSERT INTO public.historical_transactions (provider_id, transaction_value) VALUES (2, 6)',
      );
      expect((await client.query('SELECT * FROM pg_temp.balance_sync_provider_sums')).rows).toEqual([]);
    } finally {
      await client.end();
    }
    const { sums, aggregate } = await sumsAndAggregate();
    expect(sums).toEqual(aggregate);
    expect(sums[1]).toMatchObject({ provider_id: 2, tx_sum: '-189' });
  });

  it("migrates and re-installs the triggers with the documented least privileges (docs/OPERATIONS.md): a member of the tables' owner", async () => {
    await asRole('postgres', 'CREATE ROLE tables_owner; CREATE ROLE least LOGIN IN ROLE tables_owner');
    await asRole('postgres', 'CREATE DATABASE existing OWNER tables_owner');
    const owner = new pg.Pool({ connectionString: urlAs('postgres', 'existing'), max: 1 });
    const least = new pg.Pool({ connectionString: urlAs('least', 'existing'), max: 1 });
    try {
      await owner.query(`SET ROLE tables_owner; ${PRODUCER_FIXTURE}; RESET ROLE`);
      expect(await migrate(least)).toEqual({ installedTriggers: true });
      await owner.query('ALTER TABLE historical_transactions DISABLE TRIGGER balance_sync_after_insert');
      expect(await migrate(least)).toEqual({ installedTriggers: true });
      await owner.query('INSERT INTO historical_transactions (provider_id, transaction_value) VALUES (1, 9)');
      expect(
        await rows(least, 'SELECT tx_sum FROM balance_sync_provider_sums WHERE provider_id = 1'),
      ).toEqual([{ tx_sum: '309' }]);
    } finally {
      await Promise.all([owner.end(), least.end()]);
    }
  });

  it('lets no other role attach the trigger functions to a table of its own', async () => {
    await appDb.query('CREATE SCHEMA intruder; GRANT USAGE, CREATE ON SCHEMA intruder TO producer');
    await asRole('producer', 'CREATE TABLE intruder.rows (provider_id integer, transaction_value numeric)');
    await expect(
      asRole(
        'producer',
        `CREATE TRIGGER steal AFTER INSERT ON intruder.rows REFERENCING NEW TABLE AS balance_sync_new_rows
         FOR EACH STATEMENT EXECUTE FUNCTION public.balance_sync_add_rows()`,
      ),
    ).rejects.toThrow(/permission denied for function (public\.)?balance_sync_add_rows/);
  });

  it("counts an insert, an update and a delete by these roles in the schedule's next minute in KeyDB", async () => {
    const [before] = await rows(appDb, 'SELECT count(*)::int AS n FROM historical_transactions');
    await insertAsProducer('600');
    await asRole('updater', 'UPDATE historical_transactions SET transaction_value = -50 WHERE id = 3');
    await asRole('deleter', 'DELETE FROM historical_transactions WHERE id = 1');
    expect(await rows(appDb, 'SELECT count(*)::int AS n FROM historical_transactions')).toEqual([before]);
    const expected = await rows(
      appDb,
      `SELECT d.id || '_' || d.provider_name AS key,
              (d.initial_value + (SELECT sum(transaction_value) FROM historical_transactions h
                                  WHERE h.provider_id = d.id))::text AS balance
       FROM initial_data d ORDER BY d.id`,
    );
    // Seed 1300/1800, then +7 (first test), +5 +6 (second), +600, -200 → -50, -100 deleted.
    expect(expected.map((r) => r.balance)).toEqual(['1807', '1961']);

    await keydb.set('1_Visa', 'sentinel');
    const boundary = await nextScheduledBoundary(app, config, Date.now());
    expect(await keyChangedAt(keydb, '1_Visa', 'sentinel', boundary + 5_000)).toBeGreaterThan(0);
    expect(await keydb.mget('1_Visa', '2_Mastercard')).toEqual(['1807', '1961']);
  }, 120_000);
});
