import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { startCommand } from '../../bench/lib/app-process.js';

// The memory settings live outside the app (glibc reads MALLOC_ARENA_MAX and V8 its heap flags before
// any of our code runs), in two places: package.json's start script and the Dockerfile. See
// docs/BENCHMARKS.md §2.4 for why they are there.
const dockerfile = readFileSync(new URL('../../Dockerfile', import.meta.url), 'utf8');
const npmStart = () => startCommand(fileURLToPath(new URL('../../package.json', import.meta.url)));

function dockerLaunch(): { env: Record<string, string>; nodeArgs: string[] } {
  const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
  const env = Object.fromEntries(
    [...runtime.matchAll(/^ENV (\w+)=(\S+)$/gm)].map((match) => [match[1]!, match[2]!]),
  );
  const cmd = JSON.parse(/^CMD (\[.*\])$/m.exec(runtime)![1]!) as string[];
  return { env, nodeArgs: cmd.filter((word) => word.startsWith('--')) };
}

describe('launch settings (npm start and the image)', () => {
  it('npm start and the Dockerfile run node with the same memory settings', () => {
    const start = npmStart();
    const docker = dockerLaunch();
    expect(start.env.MALLOC_ARENA_MAX).toBe('2');
    expect(docker.env.MALLOC_ARENA_MAX).toBe(start.env.MALLOC_ARENA_MAX);
    expect(start.nodeArgs).toEqual(['--max-old-space-size=384', '--max-semi-space-size=4']);
    expect(docker.nodeArgs).toEqual(start.nodeArgs);
  });

  it('every npm script that runs node execs it, so a signal sent to npm stops node, not only its shell', () => {
    const { scripts } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      scripts: Record<string, string>;
    };
    const runsNode = Object.entries(scripts).filter(([, command]) => /(^|\s)node\s+dist\//.test(command));
    expect(runsNode.length).toBeGreaterThan(10);
    expect(runsNode.filter(([, command]) => !/(^|\s)exec node\s/.test(command))).toEqual([]);
  });
});
