// Bundles the workflows ahead of time so the worker starts without running webpack.
import { bundleWorkflowCode } from '@temporalio/worker';
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

const workflowsPath = fileURLToPath(new URL('../src/workflows/index.js', import.meta.url));
const out = process.argv[2] ?? fileURLToPath(new URL('../workflow-bundle.js', import.meta.url));
const { code } = await bundleWorkflowCode({ workflowsPath });
await writeFile(out, code);
console.log(`workflow bundle written to ${out} (${Math.round(code.length / 1024)} KiB)`);
