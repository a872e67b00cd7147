import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadDotEnv } from '../../src/cli.js';

describe('loadDotEnv', () => {
  let dir: string;
  const saved = { ...process.env };

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'balance-sync-env-'));
  });
  afterEach(() => {
    for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
    Object.assign(process.env, saved);
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads KEY=value lines, unquoted values with spaces included, as .env.template writes them', () => {
    writeFileSync(join(dir, '.env'), '# comment\nBS_TEST_CRON=17 * * * *\nBS_TEST_URL="redis://k:6379/0"\n');
    expect(loadDotEnv(join(dir, '.env'))).toBe(join(dir, '.env'));
    expect(process.env.BS_TEST_CRON).toBe('17 * * * *');
    expect(process.env.BS_TEST_URL).toBe('redis://k:6379/0');
  });

  it('lets the real environment win, even an empty value', () => {
    process.env.BS_TEST_PORT = '1111';
    process.env.BS_TEST_EMPTY = '';
    writeFileSync(join(dir, '.env'), 'BS_TEST_PORT=2222\nBS_TEST_EMPTY=set\n');
    loadDotEnv(join(dir, '.env'));
    expect(process.env.BS_TEST_PORT).toBe('1111');
    expect(process.env.BS_TEST_EMPTY).toBe('');
  });

  it('does nothing when there is no file', () => {
    expect(loadDotEnv(join(dir, '.env'))).toBeUndefined();
  });
});
