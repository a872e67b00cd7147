import fc from 'fast-check';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ConfigError, eagerStartShortfall, loadConfig, redactUrl } from '../../src/config.js';

/** Runs loadConfig and returns the ConfigError it throws (failing if it throws anything else or nothing). */
function configError(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

describe('loadConfig', () => {
  it('derives the sync task queue from the main one unless it is set', () => {
    expect(loadConfig({ TEMPORAL_TASK_QUEUE: 'payments' }).TEMPORAL_SYNC_TASK_QUEUE).toBe('payments-sync');
    expect(loadConfig({ TEMPORAL_SYNC_TASK_QUEUE: 'minute' }).TEMPORAL_SYNC_TASK_QUEUE).toBe('minute');
  });

  it('works with an empty environment, using the documented defaults', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      TEMPORAL_ADDRESS: 'localhost:7233',
      TEMPORAL_NAMESPACE: 'default',
      TEMPORAL_TASK_QUEUE: 'balance-sync',
      TEMPORAL_SYNC_TASK_QUEUE: 'balance-sync-sync',
      DATABASE_URL: 'postgres://user:password@localhost:5432/fxc',
      KEYDB_URL: 'redis://localhost:6379/0',
      RABBITMQ_URL: 'amqp://user:password@localhost:5672',
      INCOMING_QUEUE: 'incoming_transactions',
      DEAD_LETTER_QUEUE: 'incoming_transactions.dead',
      LOG_LEVEL: 'info',
      HTTP_PORT: 9464,
      BRIDGE_PREFETCH: 64,
      BRIDGE_MAX_IN_FLIGHT: 100,
      INGEST_SUMMARY_SECONDS: 60,
      MAX_MESSAGE_BYTES: 65536,
      WORKER_MAX_WORKFLOW_TASKS: 200,
      WORKER_MAX_LOCAL_ACTIVITIES: 200,
      SYNC_LEAD_SECONDS: 5,
      STARTUP_WAIT_SECONDS: 600,
      BRIDGE_EAGER_START: true,
      BRIDGE_HOLD_FOR_SYNC: true,
      TEMPORAL_METRICS_PORT: 9465,
      WORKFLOW_BUNDLE_PATH: '',
      RABBITMQ_HEARTBEAT_SECONDS: 5,
    });
  });

  it('treats empty variables as unset and ignores unrelated ones', () => {
    const config = loadConfig({ HTTP_PORT: '', LOG_LEVEL: '', PATH: '/usr/bin', HOME: '/root' });
    expect(config.HTTP_PORT).toBe(9464);
    expect(config.LOG_LEVEL).toBe('info');
    expect(config).not.toHaveProperty('PATH');
  });

  it('reads and converts set values', () => {
    const config = loadConfig({
      HTTP_PORT: '8080',
      TEMPORAL_METRICS_PORT: '0',
      BRIDGE_PREFETCH: '10',
      BRIDGE_MAX_IN_FLIGHT: '0',
      INGEST_SUMMARY_SECONDS: '5',
      SYNC_LEAD_SECONDS: '0',
      BRIDGE_EAGER_START: 'false',
      BRIDGE_HOLD_FOR_SYNC: 'false',
      LOG_LEVEL: 'debug',
      DATABASE_URL: 'postgresql://u:p@db:5432/other',
      RABBITMQ_URL: 'amqps://rabbit',
      RABBITMQ_HEARTBEAT_SECONDS: '2',
    });
    expect(config).toMatchObject({
      HTTP_PORT: 8080,
      TEMPORAL_METRICS_PORT: 0,
      BRIDGE_PREFETCH: 10,
      BRIDGE_MAX_IN_FLIGHT: 0,
      INGEST_SUMMARY_SECONDS: 5,
      SYNC_LEAD_SECONDS: 0,
      BRIDGE_EAGER_START: false,
      BRIDGE_HOLD_FOR_SYNC: false,
      LOG_LEVEL: 'debug',
      DATABASE_URL: 'postgresql://u:p@db:5432/other',
      RABBITMQ_URL: 'amqps://rabbit',
      RABBITMQ_HEARTBEAT_SECONDS: 2,
    });
  });

  it.each([
    ['RABBITMQ_URL', 'http://x'],
    ['RABBITMQ_URL', 'not a url'],
    ['DATABASE_URL', 'mysql://db/fxc'],
    ['KEYDB_URL', 'http://keydb:6379'],
    ['KEYDB_URL', 'redis://keydb:6379/9x'],
    ['KEYDB_URL', 'redis://keydb:6379/one'],
    ['HTTP_PORT', 'abc'],
    ['HTTP_PORT', '65536'],
    ['HTTP_PORT', '-1'],
    ['HTTP_PORT', '80.5'],
    ['HTTP_PORT', '   '],
    ['HTTP_PORT', '0x1F90'],
    ['HTTP_PORT', '1e3'],
    ['BRIDGE_PREFETCH', '0'],
    ['BRIDGE_MAX_IN_FLIGHT', '-1'],
    ['BRIDGE_MAX_IN_FLIGHT', 'many'],
    ['INGEST_SUMMARY_SECONDS', '1.5'],
    ['MAX_MESSAGE_BYTES', '1.5'],
    ['SYNC_LEAD_SECONDS', '31'],
    ['SYNC_LEAD_SECONDS', ' '],
    ['BRIDGE_EAGER_START', 'maybe'],
    ['BRIDGE_EAGER_START', 'TRUE'],
    ['BRIDGE_HOLD_FOR_SYNC', 'yes'],
    ['LOG_LEVEL', 'loud'],
    ['RECONCILE_CRON', 'not a cron'],
    ['RECONCILE_CRON', '17 * * *'],
    ['RECONCILE_CRON', '0 17 * * * *'],
    ['RECONCILE_CRON', '61 * * * *'],
    ['RECONCILE_CRON', '0 0 ? * *'],
    ['RECONCILE_CRON', '0 0 L * *'],
    ['RECONCILE_CRON', '0 0 * * MON#1'],
    ['RECONCILE_CRON', '@every 1h'],
    ['RECONCILE_CRON', 'TZ=Europe/Paris 17 * * * *'],
    ['TEMPORAL_ADDRESS', 'http://localhost:7233'],
    ['TEMPORAL_ADDRESS', 'localhost'],
    ['INCOMING_QUEUE', 'amq.incoming'],
    ['DEAD_LETTER_QUEUE', 'x'.repeat(256)],
    ['BRIDGE_PREFETCH', '65536'],
    ['RABBITMQ_HEARTBEAT_SECONDS', '0'],
    ['RABBITMQ_HEARTBEAT_SECONDS', '61'],
    ['RABBITMQ_HEARTBEAT_SECONDS', '2.5'],
    ['WORKER_MAX_WORKFLOW_TASKS', '1'],
    ['WORKFLOW_BUNDLE_PATH', '/nonexistent/workflow-bundle.js'],
  ])('rejects %s=%j with one ConfigError naming the variable', (variable, value) => {
    const error = configError({ [variable]: value });
    expect(error.name).toBe('ConfigError');
    expect(error.message).toMatch(new RegExp(`^Invalid configuration: ${variable}: `));
    expect(error.message.split('; ')).toHaveLength(1);
  });

  it.each([
    '17 * * * *',
    '*/15 1-3,22 * JAN-MAR mon-fri',
    '0 0 1 1 *',
    '  5 4 * * 0  ',
    '@hourly',
    '@daily',
    '@weekly',
    '@monthly',
    '@yearly',
  ])('accepts RECONCILE_CRON=%j (a form Temporal reads the same way)', (cron) => {
    expect(loadConfig({ RECONCILE_CRON: cron }).RECONCILE_CRON).toBe(cron);
  });

  it.each([
    [{ INCOMING_QUEUE: 'q', DEAD_LETTER_QUEUE: 'q' }, 'DEAD_LETTER_QUEUE: must differ from INCOMING_QUEUE'],
    [
      { SYNC_SCHEDULE_ID: 's', RECONCILE_SCHEDULE_ID: 's' },
      'RECONCILE_SCHEDULE_ID: must differ from SYNC_SCHEDULE_ID',
    ],
    [
      { HTTP_PORT: '9000', TEMPORAL_METRICS_PORT: '9000' },
      'TEMPORAL_METRICS_PORT: must differ from HTTP_PORT (both 9000)',
    ],
  ])('rejects settings that clash: %j', (env, message) => {
    expect(configError(env).message).toBe(`Invalid configuration: ${message}`);
  });

  it('allows HTTP_PORT and TEMPORAL_METRICS_PORT both 0 (any free port, exporter off)', () => {
    expect(loadConfig({ HTTP_PORT: '0', TEMPORAL_METRICS_PORT: '0' })).toMatchObject({ HTTP_PORT: 0 });
  });

  it('listens on every interface unless HTTP_HOST names one (an address or a host name)', () => {
    expect(loadConfig({}).HTTP_HOST).toBeUndefined();
    for (const host of ['127.0.0.1', '::1', 'localhost', 'metrics.internal']) {
      expect(loadConfig({ HTTP_HOST: ` ${host} ` }).HTTP_HOST).toBe(host);
    }
  });

  it.each(['127.0.0.1:9464', '[::1]', 'http://localhost', 'two words', '-host'])(
    'refuses HTTP_HOST=%s, naming it without echoing the value',
    (value) => {
      expect(configError({ HTTP_HOST: value }).message).toBe(
        'Invalid configuration: HTTP_HOST: must be an IP address or a host name, without a port (e.g. 127.0.0.1 or ::1)',
      );
    },
  );

  it('keeps the balance history 90 days and leaves GET /balances off unless BALANCES_API_TOKEN is set', () => {
    expect(loadConfig({}).BALANCE_HISTORY_DAYS).toBe(90);
    expect(loadConfig({}).BALANCES_API_TOKEN).toBeUndefined();
    expect(loadConfig({ BALANCE_HISTORY_DAYS: '0', BALANCES_API_TOKEN: 'x'.repeat(16) })).toMatchObject({
      BALANCE_HISTORY_DAYS: 0,
      BALANCES_API_TOKEN: 'x'.repeat(16),
    });
  });

  it.each([
    ['BALANCE_HISTORY_DAYS', '-1', 'must be a whole number'],
    ['BALANCES_API_TOKEN', 'short-secret', 'must be at least 16 characters'],
    ['BALANCES_API_TOKEN', 'sixteen chars secret', 'must be printable ASCII without spaces'],
  ])('refuses %s=%s, naming it without echoing the value', (variable, value, message) => {
    const error = configError({ [variable]: value });
    expect(error.message).toBe(`Invalid configuration: ${variable}: ${message}`);
  });

  it.each([
    'amqp://user:password@rabbit:5672?heartbeat=0',
    'amqps://rabbit/vhost?frameMax=8192&heartbeat=60',
  ])('refuses a heartbeat in RABBITMQ_URL (%s), naming RABBITMQ_HEARTBEAT_SECONDS', (value) => {
    expect(configError({ RABBITMQ_URL: value }).message).toBe(
      'Invalid configuration: RABBITMQ_URL: must not carry a heartbeat parameter: set RABBITMQ_HEARTBEAT_SECONDS instead',
    );
    expect(loadConfig({ RABBITMQ_URL: 'amqps://rabbit/vhost?frameMax=8192' }).RABBITMQ_URL).toBe(
      'amqps://rabbit/vhost?frameMax=8192',
    );
  });

  it('names every bad variable in a single error', () => {
    const error = configError({ HTTP_PORT: 'abc', LOG_LEVEL: 'loud', BRIDGE_EAGER_START: 'maybe' });
    for (const variable of ['HTTP_PORT', 'LOG_LEVEL', 'BRIDGE_EAGER_START'])
      expect(error.message).toContain(`${variable}:`);
    expect(error.message.split('; ')).toHaveLength(3);
  });

  it.each([
    ['DATABASE_URL', 'mysql://admin:Sup3r-S3cret-Pw@db:3306/fxc'],
    ['DATABASE_URL', 'postgres//admin:Sup3r-S3cret-Pw@db:5432/fxc'],
    ['DATABASE_URL', 'Sup3r-S3cret-Pw'],
    ['RABBITMQ_URL', 'http://admin:Sup3r-S3cret-Pw@rabbit:5672'],
    ['KEYDB_URL', 'https://:Sup3r-S3cret-Pw@keydb:6379'],
  ])('never echoes a password from a bad %s', (variable, value) => {
    const error = configError({ [variable]: value });
    expect(error.message).toContain(variable);
    for (const text of [error.message, String(error.stack), inspect(error), JSON.stringify(error)])
      expect(text).not.toContain('Sup3r-S3cret-Pw');
  });

  it('never echoes any password from a bad DATABASE_URL', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('mysql', 'http', 'postgres', 'postgresx', 'jdbc:postgresql'),
        fc.stringMatching(/^[A-Za-z0-9._~-]{8,30}$/),
        fc.constantFrom('://', '//', ':/', ''),
        (scheme, password, separator) => {
          const secret = `pw${password}`;
          const value = `${scheme}${separator}admin:${secret}@db:5432/fxc`;
          let message = '';
          try {
            loadConfig({ DATABASE_URL: value });
          } catch (error) {
            message = String(error);
          }
          expect(message).not.toContain(secret);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('eagerStartShortfall', () => {
  it('is quiet with the defaults: the slots cover BRIDGE_MAX_IN_FLIGHT + BRIDGE_PREFETCH + 10 pollers', () => {
    expect(eagerStartShortfall(loadConfig({}))).toBeUndefined();
    expect(
      eagerStartShortfall(
        loadConfig({ BRIDGE_MAX_IN_FLIGHT: '26', BRIDGE_PREFETCH: '4', WORKER_MAX_WORKFLOW_TASKS: '40' }),
      ),
    ).toBeUndefined();
  });

  it('names the settings when the runs the throttle lets through could find no free slot', () => {
    expect(eagerStartShortfall(loadConfig({ WORKER_MAX_WORKFLOW_TASKS: '100' }))).toBe(
      'WORKER_MAX_WORKFLOW_TASKS (100) is below BRIDGE_MAX_IN_FLIGHT + BRIDGE_PREFETCH + 10 pollers (174): ' +
        'under a backlog some starts find no free slot and go through the task queue',
    );
    expect(
      eagerStartShortfall(
        loadConfig({ BRIDGE_MAX_IN_FLIGHT: '27', BRIDGE_PREFETCH: '4', WORKER_MAX_WORKFLOW_TASKS: '40' }),
      ),
    ).toMatch(/\(41\)/);
  });

  it('says nothing when eager start is off, or the throttle is (nothing bounds the runs then)', () => {
    expect(
      eagerStartShortfall(loadConfig({ WORKER_MAX_WORKFLOW_TASKS: '2', BRIDGE_EAGER_START: 'false' })),
    ).toBeUndefined();
    expect(
      eagerStartShortfall(loadConfig({ WORKER_MAX_WORKFLOW_TASKS: '2', BRIDGE_MAX_IN_FLIGHT: '0' })),
    ).toBeUndefined();
  });
});

describe('redactUrl', () => {
  it('hides the password and keeps everything else', () => {
    expect(redactUrl('postgres://user:secret@db:5432/fxc')).toBe('postgres://user:***@db:5432/fxc');
    expect(redactUrl('amqp://guest:p%40ss%3Aw0rd@rabbit:5672/vhost')).toBe(
      'amqp://guest:***@rabbit:5672/vhost',
    );
    expect(redactUrl('redis://:only-a-password@keydb:6379/0')).toBe('redis://:***@keydb:6379/0');
  });

  it('leaves URLs without a password unchanged', () => {
    expect(redactUrl('redis://keydb:6379/0')).toBe('redis://keydb:6379/0');
    expect(redactUrl('amqp://user@rabbit')).toBe('amqp://user@rabbit');
  });

  it('never echoes an unparseable value', () => {
    expect(redactUrl('not a url with secret')).toBe('<unparseable url>');
  });

  it('hides credentials in a URL missing its slashes (they pass the protocol check)', () => {
    // loadConfig accepts these (the protocol is right) and app.ts logs them through redactUrl.
    expect(loadConfig({ DATABASE_URL: 'postgres:user:secret@db/fxc' }).DATABASE_URL).toBeTruthy();
    expect(redactUrl('postgres:user:secret@db/fxc')).toBe('postgres:<redacted>');
    expect(redactUrl('postgres:/user:secret@db/fxc')).not.toContain('secret');
    expect(redactUrl('user:secret@db')).not.toContain('secret');
  });

  it('hides a password passed as a query parameter', () => {
    const redacted = redactUrl('postgres://user@db:5432/fxc?sslmode=require&password=secret');
    expect(redacted).not.toContain('secret');
    expect(redacted).toBe('postgres://user@db:5432/fxc?sslmode=require&password=***');
    expect(redactUrl('postgres:///fxc?host=/var/run/postgresql')).toBe(
      'postgres:///fxc?host=/var/run/postgresql',
    );
  });

  it('never leaks the password of any URL', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('postgres', 'amqp', 'amqps', 'redis', 'rediss'),
        fc.stringMatching(/^[A-Za-z0-9]{1,12}$/),
        fc.stringMatching(/^[A-Za-z0-9._~!$&'()*+,;=-]{6,30}$/),
        (scheme, user, password) => {
          const secret = `PW${password}`;
          const redacted = redactUrl(`${scheme}://${user}:${encodeURIComponent(secret)}@host:1234/db`);
          expect(redacted).not.toContain(secret);
          expect(redacted).not.toContain(encodeURIComponent(secret));
          expect(redacted).toBe(`${scheme}://${user}:***@host:1234/db`);
        },
      ),
      { numRuns: 300 },
    );
  });
});
