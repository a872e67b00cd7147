import { loadDotEnv } from '../env-file.js';
import { runProducerCli } from './cli.js';

/** `npm run produce` / `node dist/src/producer/main.js`: see `--help`. SIGINT/SIGTERM stop it cleanly. */
const stop = new AbortController();
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => stop.abort());

try {
  loadDotEnv();
} catch (error) {
  process.stderr.write(`produce: cannot read .env: ${(error as Error).message}\n`);
  process.exit(2);
}

runProducerCli(process.argv.slice(2), process.env, {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  signal: stop.signal,
}).then(
  (status) => process.exit(status),
  (error: unknown) => {
    process.stderr.write(`produce: ${(error as Error).message}\n`);
    process.exit(1);
  },
);
