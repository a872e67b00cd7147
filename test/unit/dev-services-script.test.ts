import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';

const SCRIPT = fileURLToPath(new URL('../../scripts/dev-services.sh', import.meta.url));
const SERVER_COMMANDS = {
  postgresql: ['pg_ctlcluster', 'pg_isready', 'psql'],
  'redis-server': ['redis-server', 'redis-cli'],
  'rabbitmq-server': ['rabbitmq-server', 'rabbitmqctl', 'rabbitmq-plugins'],
  pgbouncer: ['pgbouncer'],
  faketime: ['faketime'],
};

/**
 * Runs scripts/dev-services.sh in dry-run mode with a PATH holding only `id` and stubs for the
 * given commands, as on a machine where the other servers are not installed.
 */
function dryRun(installed: string[], withAptGet: boolean) {
  const bin = mkdtempSync(join(tmpdir(), 'dev-services-bin-'));
  dirs.push(bin);
  symlinkSync('/usr/bin/id', join(bin, 'id'));
  for (const command of [...installed, ...(withAptGet ? ['apt-get'] : [])]) {
    writeFileSync(join(bin, command), '#!/bin/sh\necho "stub $0 must not run in a dry run" >&2; exit 99\n');
    chmodSync(join(bin, command), 0o755);
  }
  return spawnSync('/bin/bash', [SCRIPT], {
    env: { PATH: bin, DEV_SERVICES_DRY_RUN: '1' },
    encoding: 'utf8',
  });
}

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('scripts/dev-services.sh', () => {
  it('installs every missing server with apt-get on Debian (dry run)', () => {
    const run = dryRun([], true);
    expect(run.stderr).toBe('');
    expect(run.stdout.trim().split('\n')).toEqual([
      'dev-services: installing postgresql redis-server rabbitmq-server pgbouncer faketime with apt-get',
      expect.stringMatching(/^dev-services: would run: (sudo )?apt-get update -qq$/),
      expect.stringMatching(
        /^dev-services: would run: (sudo )?env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql redis-server rabbitmq-server pgbouncer faketime$/,
      ),
      'dev-services: would then start and provision postgres, redis and rabbitmq',
    ]);
    expect(run.status).toBe(0);
  });

  it('installs only what is missing', () => {
    const run = dryRun(
      [
        ...SERVER_COMMANDS.postgresql,
        ...SERVER_COMMANDS['rabbitmq-server'],
        ...SERVER_COMMANDS.pgbouncer,
        ...SERVER_COMMANDS.faketime,
      ],
      true,
    );
    expect(run.stdout).toContain('installing redis-server with apt-get');
    expect(run.stdout).toMatch(/--no-install-recommends redis-server\n/);
    expect(run.status).toBe(0);
  });

  it('installs pgbouncer (for the PgBouncer test, not started) when only it is missing', () => {
    const run = dryRun(
      [
        ...SERVER_COMMANDS.postgresql,
        ...SERVER_COMMANDS['redis-server'],
        ...SERVER_COMMANDS['rabbitmq-server'],
        ...SERVER_COMMANDS.faketime,
      ],
      true,
    );
    expect(run.stdout).toContain('installing pgbouncer with apt-get');
    expect(run.stdout).toMatch(/--no-install-recommends pgbouncer\n/);
    expect(run.status).toBe(0);
  });

  it('says plainly what to install where there is no apt-get, and exits 1', () => {
    const run = dryRun(SERVER_COMMANDS.postgresql, false);
    expect(run.stderr).toContain('missing: redis-server rabbitmq-server pgbouncer faketime');
    expect(run.stderr).toContain('Install PostgreSQL (14 or later), Redis (or KeyDB) and RabbitMQ');
    expect(run.stdout).toBe('');
    expect(run.status).toBe(1);
  });
});
