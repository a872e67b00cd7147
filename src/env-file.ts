import { existsSync } from 'node:fs';
import { resolve } from 'node:path';

/**
 * Loads `.env` from the working directory into `process.env` when the file exists, with Node's own
 * parser (`process.loadEnvFile`). A variable already in the environment wins over the file, even
 * when set to an empty string. Returns the absolute path read, or undefined when there is no file.
 */
export function loadDotEnv(path = '.env'): string | undefined {
  const absolute = resolve(path);
  if (!existsSync(absolute)) return undefined;
  process.loadEnvFile(absolute);
  return absolute;
}
