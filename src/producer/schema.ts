import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';

const FIXTURE = join('fixtures', 'producer-schema.sql');
/** Serialises concurrent producers' create-and-seed; distinct from the app's migration lock. */
const PRODUCER_SCHEMA_LOCK_KEY = 0x70726f64; // "prod"

/** fixtures/producer-schema.sql, found from src/producer (tests) or dist/src/producer (built, container). */
export function producerFixturePath(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let up = 0; up < 5; up++) {
    const candidate = join(dir, FIXTURE);
    if (existsSync(candidate)) return candidate;
    dir = dirname(dir);
  }
  throw new Error(`${FIXTURE} not found above ${dirname(fileURLToPath(import.meta.url))}`);
}

/** The fixture split into its CREATE TABLE statements and its seed INSERT statements. */
export function splitFixture(sql: string): { create: string[]; seed: string[] } {
  const statements = sql
    .split('\n')
    .filter((line) => !line.trim().startsWith('--'))
    .join('\n')
    .split(';')
    .map((statement) => statement.trim())
    .filter(Boolean);
  const create = statements.filter((s) => /^CREATE\s/i.test(s));
  const seed = statements.filter((s) => /^INSERT\s/i.test(s));
  const other = statements.filter((s) => !create.includes(s) && !seed.includes(s));
  if (other.length > 0) throw new Error(`unexpected statement in ${FIXTURE}: ${other[0]!.slice(0, 60)}`);
  return { create, seed };
}

export interface SchemaOutcome {
  /** Tables this call created (empty when both already existed). */
  created: string[];
  /** Whether the seed rows were inserted by this call. */
  seeded: boolean;
}

/**
 * Creates the original producer's tables if missing and seeds them only when this call created
 * initial_data, so a restart does not append the seed rows again. `reseed` inserts the seed rows
 * whatever exists: the original producer's behaviour on every start.
 */
export async function ensureProducerTables(
  pool: pg.Pool,
  options: { reseed?: boolean; fixture?: string } = {},
): Promise<SchemaOutcome> {
  const { create, seed } = splitFixture(options.fixture ?? readFileSync(producerFixturePath(), 'utf8'));
  const client = await pool.connect();
  let failure: Error | undefined;
  try {
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock($1)', [PRODUCER_SCHEMA_LOCK_KEY]);
    const exists = async (table: string) =>
      (await client.query<{ found: boolean }>('SELECT to_regclass($1) IS NOT NULL AS found', [table]))
        .rows[0]!.found;
    const before = {
      initial_data: await exists('initial_data'),
      historical_transactions: await exists('historical_transactions'),
    };
    for (const statement of create) await client.query(statement);
    const seeded = !before.initial_data || options.reseed === true;
    if (seeded) for (const statement of seed) await client.query(statement);
    await client.query('COMMIT');
    return {
      created: Object.entries(before)
        .filter(([, found]) => !found)
        .map(([table]) => table),
      seeded,
    };
  } catch (error) {
    failure = error as Error;
    throw error;
  } finally {
    // A failed client is destroyed (its transaction ends with it), never handed back to the pool.
    client.release(failure);
  }
}

/** Provider ids a good message may carry: those in initial_data. */
export async function providerIds(pool: pg.Pool): Promise<number[]> {
  const { rows } = await pool.query<{ id: number }>('SELECT id FROM initial_data ORDER BY id');
  return rows.map((row) => row.id);
}
