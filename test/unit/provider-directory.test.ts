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

  it('reloads at most once a second even when the wall clock jumps a day ahead: a miss waits for the second', async () => {
    vi.useFakeTimers({ toFake: ['Date'], now: Date.parse('2030-01-01T10:00:00Z') });
    let monotonic = 0;
    const { table, pool } = initialData(1, 2);
    const directory = new ProviderDirectory(pool, 1000, () => monotonic);
    expect(await directory.has(7)).toBe(false);
    vi.setSystemTime(Date.parse('2030-01-02T10:00:00Z'));
    monotonic += 900;
    const started = performance.now();
    expect(await directory.has(8)).toBe(false);
    expect(performance.now() - started).toBeGreaterThanOrEqual(90);
    expect(table.reads).toBe(2);
  });

  it('finds a provider added just after a load: a miss is answered by a load begun after it, never refused', async () => {
    let monotonic = 0;
    const { table, pool } = initialData(1, 2);
    const directory = new ProviderDirectory(pool, 1000, () => monotonic);
    expect(await directory.has(7)).toBe(false);
    table.ids.push(3);
    monotonic += 10;
    expect(await directory.has(3)).toBe(true);
    expect(table.reads).toBe(2);
  });
});
