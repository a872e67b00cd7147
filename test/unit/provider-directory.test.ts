import type pg from 'pg';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ProviderDirectory } from '../../src/bridge/provider-directory.js';

/** initial_data as a stub pool: the ids it holds now, and how many times it was read. */
function initialData(...ids: number[]) {
  const table = { ids, reads: 0 };
  const pool = {
    query: () => {
      table.reads++;
      return Promise.resolve({ rows: table.ids.map((id) => ({ id })) });
    },
  } as unknown as pg.Pool;
  return { table, pool };
}

describe('ProviderDirectory', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('finds a provider added after the wall clock was stepped back an hour, once a second has passed', async () => {
    vi.useFakeTimers({ toFake: ['Date'], now: Date.parse('2030-01-01T10:00:00Z') });
    let monotonic = 0;
    const { table, pool } = initialData(1, 2);
    const directory = new ProviderDirectory(pool, 1000, () => monotonic);
    expect(await directory.has(7)).toBe(false);
    table.ids.push(7);
    vi.setSystemTime(Date.parse('2030-01-01T09:00:00Z'));
    monotonic += 1000;
    expect(await directory.has(7)).toBe(true);
    expect(table.reads).toBe(2);
  });

  it('reloads at most once a second even when the wall clock jumps a day ahead', async () => {
    vi.useFakeTimers({ toFake: ['Date'], now: Date.parse('2030-01-01T10:00:00Z') });
    let monotonic = 0;
    const { table, pool } = initialData(1, 2);
    const directory = new ProviderDirectory(pool, 1000, () => monotonic);
    expect(await directory.has(7)).toBe(false);
    vi.setSystemTime(Date.parse('2030-01-02T10:00:00Z'));
    monotonic += 999;
    expect(await directory.has(8)).toBe(false);
    expect(table.reads).toBe(1);
  });
});
