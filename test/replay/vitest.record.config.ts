import { defineConfig } from 'vitest/config';
import base from '../../vitest.config.js';

/** `npm run replay:record`: runs only the history recorder, with the suite's global setup. */
export default defineConfig({ test: { ...base.test, include: ['test/replay/record-histories.ts'] } });
