import { runAsProcess } from '../cli.js';
import { produceCommand } from './cli.js';

/** `npm run produce` / `node dist/src/producer/main.js`: see `--help`. SIGINT/SIGTERM stop it cleanly. */
runAsProcess(produceCommand);
