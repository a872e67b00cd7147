import { execFileSync } from 'node:child_process';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ConfigError } from '../../src/config.js';
import {
  apiKeyExpiry,
  connectFailure,
  isRefusal,
  namespaceRefusal,
  refusedCredentials,
  temporalConnectOptions,
  transportReason,
  watchApiKeyFile,
} from '../../src/temporal-connection.js';

describe('transportReason', () => {
  it.each([
    [
      'tonic::transport::Error(Transport, ConnectError(ConnectError("tcp connect error", 127.0.0.1:7233, Os { code: 111, kind: ConnectionRefused, message: "Connection refused" })))',
      'tcp connect error: Connection refused',
    ],
    [
      'tonic::transport::Error(Transport, ConnectError(ConnectError("dns error", Custom { kind: Uncategorized, error: "failed to lookup address information: Name or service not known" })))',
      'dns error: failed to lookup address information: Name or service not known',
    ],
    ['Deadline exceeded', 'Deadline exceeded'],
  ])('shortens %j', (message, short) => {
    expect(transportReason(message)).toBe(short);
  });

  it('cuts any other long message to 120 characters', () => {
    expect(transportReason('x'.repeat(300))).toHaveLength(120);
  });
});

describe('temporalConnectOptions', () => {
  const config = { TEMPORAL_ADDRESS: 'localhost:7233', TEMPORAL_NAMESPACE: 'default' };
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'balance-sync-tls-unit-'));
    writeFileSync(join(dir, 'client.pem'), 'certificate');
    writeFileSync(join(dir, 'client.key'), 'key');
    // No developer's temporal.toml: only the variables below.
    vi.stubEnv('TEMPORAL_CONFIG_FILE', join(dir, 'none.toml'));
  });
  afterEach(() => {
    vi.unstubAllEnvs();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads the client certificate pair and turns TLS on', () => {
    vi.stubEnv('TEMPORAL_TLS_CLIENT_CERT_PATH', join(dir, 'client.pem'));
    vi.stubEnv('TEMPORAL_TLS_CLIENT_KEY_PATH', join(dir, 'client.key'));
    vi.stubEnv('TEMPORAL_TLS_SERVER_NAME', 'temporal.example');
    const { connectionOptions, namespace } = temporalConnectOptions(config);
    expect(connectionOptions.address).toBe('localhost:7233');
    const tls = connectionOptions.tls as {
      serverNameOverride?: string;
      clientCertPair?: { crt: Uint8Array; key: Uint8Array };
    };
    expect(tls.serverNameOverride).toBe('temporal.example');
    expect(Buffer.from(tls.clientCertPair!.crt).toString()).toBe('certificate');
    expect(Buffer.from(tls.clientCertPair!.key).toString()).toBe('key');
    expect(namespace).toBe('default');
  });

  it('turns TLS on for an API key, which is sent as the bearer token', () => {
    vi.stubEnv('TEMPORAL_API_KEY', 'secret-key');
    expect(temporalConnectOptions(config).connectionOptions).toMatchObject({
      apiKey: 'secret-key',
      tls: true,
    });
  });

  it('reads the API key from TEMPORAL_API_KEY_FILE, trimmed, and turns TLS on', () => {
    writeFileSync(join(dir, 'api-key'), 'file-key\n');
    vi.stubEnv('TEMPORAL_API_KEY_FILE', join(dir, 'api-key'));
    expect(temporalConnectOptions(config).connectionOptions).toMatchObject({ apiKey: 'file-key', tls: true });
  });

  it("keeps the rest of TEMPORAL_PROFILE's settings beside the key file's key", () => {
    writeFileSync(join(dir, 'api-key'), 'file-key');
    writeFileSync(
      join(dir, 'temporal.toml'),
      '[profile.cloud]\naddress = "ns.acct.tmprl.cloud:7233"\nnamespace = "ns.acct"\n',
    );
    vi.stubEnv('TEMPORAL_CONFIG_FILE', join(dir, 'temporal.toml'));
    vi.stubEnv('TEMPORAL_PROFILE', 'cloud');
    vi.stubEnv('TEMPORAL_API_KEY_FILE', join(dir, 'api-key'));
    const { connectionOptions, namespace } = temporalConnectOptions(config);
    expect(connectionOptions).toMatchObject({
      address: 'ns.acct.tmprl.cloud:7233',
      apiKey: 'file-key',
      tls: true,
    });
    expect(namespace).toBe('ns.acct');
  });

  it('takes an empty TEMPORAL_API_KEY beside the key file as no key (compose passes unset variables as empty)', () => {
    writeFileSync(join(dir, 'api-key'), 'file-key');
    vi.stubEnv('TEMPORAL_API_KEY_FILE', join(dir, 'api-key'));
    vi.stubEnv('TEMPORAL_API_KEY', '');
    expect(temporalConnectOptions(config).connectionOptions).toMatchObject({ apiKey: 'file-key', tls: true });
  });

  it.each([
    [
      'a missing file',
      () => vi.stubEnv('TEMPORAL_API_KEY_FILE', join(dir, 'none')),
      /cannot read TEMPORAL_API_KEY_FILE \(.*none\): ENOENT/,
    ],
    [
      'an empty file',
      () => {
        writeFileSync(join(dir, 'empty'), ' \n');
        vi.stubEnv('TEMPORAL_API_KEY_FILE', join(dir, 'empty'));
      },
      /TEMPORAL_API_KEY_FILE \(.*empty\) is empty/,
    ],
    [
      'both settings',
      () => {
        writeFileSync(join(dir, 'api-key'), 'file-key');
        vi.stubEnv('TEMPORAL_API_KEY_FILE', join(dir, 'api-key'));
        vi.stubEnv('TEMPORAL_API_KEY', 'env-key');
      },
      /set TEMPORAL_API_KEY or TEMPORAL_API_KEY_FILE, not both/,
    ],
    [
      "a profile's api_key beside it",
      () => {
        writeFileSync(join(dir, 'api-key'), 'file-key');
        writeFileSync(join(dir, 'temporal.toml'), '[profile.cloud]\napi_key = "profile-key"\n');
        vi.stubEnv('TEMPORAL_CONFIG_FILE', join(dir, 'temporal.toml'));
        vi.stubEnv('TEMPORAL_PROFILE', 'cloud');
        vi.stubEnv('TEMPORAL_API_KEY_FILE', join(dir, 'api-key'));
      },
      /profile cloud \(TEMPORAL_PROFILE, in .*temporal\.toml\) has an api_key and TEMPORAL_API_KEY_FILE is set: keep one/,
    ],
  ])('refuses %s as a configuration error naming TEMPORAL_API_KEY_FILE', (_, arrange, reason) => {
    arrange();
    expect(() => temporalConnectOptions(config)).toThrow(ConfigError);
    expect(() => temporalConnectOptions(config)).toThrow(reason);
  });

  it.each([
    [
      'TEMPORAL_TLS_CLIENT_CERT_PATH',
      'client.pem',
      /client certificate without its key \(TEMPORAL_TLS_CLIENT_KEY_PATH\)/,
    ],
    [
      'TEMPORAL_TLS_CLIENT_KEY_PATH',
      'client.key',
      /client key without its certificate \(TEMPORAL_TLS_CLIENT_CERT_PATH\)/,
    ],
    ['TEMPORAL_TLS_SERVER_CA_CERT_PATH', 'missing-ca.pem', /ENOENT.*missing-ca\.pem/],
  ])('refuses %s=%s alone as a configuration error', (variable, file, reason) => {
    vi.stubEnv(variable, join(dir, file));
    expect(() => temporalConnectOptions(config)).toThrow(ConfigError);
    expect(() => temporalConnectOptions(config)).toThrow(reason);
    expect(() => temporalConnectOptions(config)).toThrow(/^Invalid configuration: Temporal connection/);
  });
});

/** What the Rust core reported against a cluster of scripts/temporal-cluster.sh with TEMPORAL_CLUSTER_TLS=mtls. */
const SEEN = {
  noClientCertificate:
    'Failed to call GetSystemInfo: code: \'The operation was cancelled\', message: "operation was canceled", source: tonic::transport::Error(Transport, hyper::Error(Canceled, "connection closed"))',
  noTls:
    'Failed to call GetSystemInfo: code: \'Unknown error\', message: "transport error", source: tonic::transport::Error(Transport, hyper::Error(Io, Custom { kind: BrokenPipe, error: "stream closed because of a broken pipe" }))',
  noServerName:
    'tonic::transport::Error(Transport, ConnectError(Custom { kind: InvalidData, error: InvalidCertificate(NotValidForNameContext { expected: IpAddress(V4(Ipv4Addr([127, 0, 0, 1]))), presented: ["DnsName(\\"temporal-cluster.test\\")", "DnsName(\\"localhost\\")"] }) }))',
  noCa: 'tonic::transport::Error(Transport, ConnectError(Custom { kind: InvalidData, error: InvalidCertificate(UnknownIssuer) }))',
  refused:
    'tonic::transport::Error(Transport, ConnectError(ConnectError("tcp connect error", 127.0.0.1:7233, Os { code: 111, kind: ConnectionRefused, message: "Connection refused" })))',
  /** TEMPORAL_CLUSTER_AUTH=jwt: a token the server's JWKS does not verify, or an expired one. */
  badApiKey:
    'Failed to call GetSystemInfo: code: \'The caller does not have permission to execute the specified operation\', message: "Request unauthorized."',
};

/** An unsigned JWT with these claims: apiKeyExpiry reads, never verifies. */
const jwt = (claims: object) => `e30.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.signature`;

describe('connectFailure', () => {
  const CA_ONLY = { tls: { serverRootCACertificate: new Uint8Array() } };
  const MUTUAL = { tls: { clientCertPair: { crt: new Uint8Array(), key: new Uint8Array() } } };

  it('stops at once on a server certificate the client refuses, naming the setting', () => {
    expect(connectFailure(SEEN.noServerName, MUTUAL)).toEqual({
      reason:
        "the server's TLS certificate is not valid for the address's host (it names temporal-cluster.test, localhost): " +
        'set TEMPORAL_TLS_SERVER_NAME to one of them',
      permanent: true,
    });
    expect(connectFailure(SEEN.noCa, MUTUAL)).toEqual({
      reason:
        "the server's TLS certificate is not signed by a CA this client trusts (TEMPORAL_TLS_SERVER_CA_CERT_PATH)",
      permanent: true,
    });
  });

  it('retries a closed connection, naming the client certificate when TLS is on without one', () => {
    expect(connectFailure(SEEN.noClientCertificate, CA_ONLY)).toEqual({
      reason:
        'operation was canceled; if the server requires a client certificate (mutual TLS), set ' +
        'TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH',
      permanent: false,
    });
    // With a certificate or an API key there is nothing to suggest.
    expect(connectFailure(SEEN.noClientCertificate, MUTUAL).reason).toBe('operation was canceled');
    expect(connectFailure(SEEN.noClientCertificate, { ...CA_ONLY, apiKey: 'key' }).reason).toBe(
      'operation was canceled',
    );
  });

  it('retries a broken connection, naming TLS when it is off', () => {
    expect(connectFailure(SEEN.noTls, {})).toEqual({
      reason:
        'transport error; if the server requires TLS, set TEMPORAL_TLS_SERVER_CA_CERT_PATH (or TEMPORAL_TLS=true)',
      permanent: false,
    });
  });

  it('says nothing of TLS when the server was not reached at all', () => {
    expect(connectFailure(SEEN.refused, {})).toEqual({
      reason: 'tcp connect error: Connection refused',
      permanent: false,
    });
  });
});

describe('API keys refused', () => {
  it('stops at once on a key the server refuses, naming TEMPORAL_API_KEY, and when it expired if it did', () => {
    expect(connectFailure(SEEN.badApiKey, { tls: true, apiKey: jwt({ exp: 2_000_000_000 }) })).toEqual({
      reason: 'the server refused the API key (TEMPORAL_API_KEY): Request unauthorized.',
      permanent: true,
    });
    expect(connectFailure(SEEN.badApiKey, { tls: true, apiKey: jwt({ exp: 1_700_000_000 }) })).toEqual({
      reason:
        'the server refused the API key (TEMPORAL_API_KEY, which expired at 2023-11-14T22:13:20.000Z): ' +
        'Request unauthorized.',
      permanent: true,
    });
  });

  it("reads a JWT key's expiry; any other key has none", () => {
    expect(apiKeyExpiry(jwt({ exp: 1_700_000_000 }))).toEqual(new Date(1_700_000_000_000));
    expect(apiKeyExpiry(jwt({ sub: 'no exp' }))).toBeUndefined();
    expect(apiKeyExpiry('an-opaque-key')).toBeUndefined();
    expect(apiKeyExpiry('not.base64-json.here')).toBeUndefined();
  });

  it('names a namespace refused to the key (or to no key), and nothing else', async () => {
    const answering = (error?: Error) => ({
      workflowService: {
        describeNamespace: () => (error ? Promise.reject(error) : Promise.resolve({})),
      },
    });
    const denied = Object.assign(new Error('Request unauthorized.'), { code: 7 });
    const notFound = Object.assign(new Error('Namespace x is not found.'), { code: 5 });
    const connection = (error?: Error) => answering(error) as never;
    expect(await namespaceRefusal(connection(denied), 'x', { apiKey: 'key' })).toBe(
      'the server refused the API key (TEMPORAL_API_KEY) for namespace x: Request unauthorized.',
    );
    expect(await namespaceRefusal(connection(denied), 'x', {})).toBe(
      'the server refused this client for namespace x: Request unauthorized.; if it requires an API key, set TEMPORAL_API_KEY (or TEMPORAL_API_KEY_FILE)',
    );
    expect(await namespaceRefusal(connection(notFound), 'x', { apiKey: 'key' })).toBeUndefined();
    expect(await namespaceRefusal(connection(), 'x', { apiKey: 'key' })).toBeUndefined();
  });

  it('names TEMPORAL_API_KEY_FILE when the key comes from it', async () => {
    vi.stubEnv('TEMPORAL_API_KEY_FILE', '/run/secrets/temporal-api-key');
    try {
      expect(refusedCredentials('Request unauthorized.', { apiKey: 'key' })).toBe(
        'the server refused the API key (TEMPORAL_API_KEY_FILE): Request unauthorized.',
      );
      const denied = Object.assign(new Error('Request unauthorized.'), { code: 7 });
      const connection = {
        workflowService: { describeNamespace: () => Promise.reject(denied) },
      } as never;
      expect(await namespaceRefusal(connection, 'x', { apiKey: 'key' })).toBe(
        'the server refused the API key (TEMPORAL_API_KEY_FILE) for namespace x: Request unauthorized.',
      );
    } finally {
      vi.unstubAllEnvs();
    }
  });

  it('tells a refusal from any other error, or none', () => {
    expect(isRefusal(Object.assign(new Error('denied'), { code: 7 }))).toBe(true);
    expect(isRefusal(Object.assign(new Error('unauthenticated'), { code: 16 }))).toBe(true);
    expect(isRefusal(Object.assign(new Error('unavailable'), { code: 14 }))).toBe(false);
    expect(isRefusal(undefined)).toBe(false);
  });
});

describe('watchApiKeyFile', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'balance-sync-key-unit-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const log = () => {
    const lines: { level: string; fields: object; msg: string }[] = [];
    const at = (level: string) => (fields: object, msg: string) => lines.push({ level, fields, msg });
    return { lines, logger: { info: at('info'), warn: at('warn') } as never };
  };
  /** Resolves after the watch (every 5 ms here) has read the file this many more times. */
  const reads = (counter: { n: number }, more: number) => {
    const target = counter.n + more;
    return vi.waitFor(() => expect(counter.n).toBeGreaterThanOrEqual(target));
  };

  it('gives a rotated key to the connection, once; an unreadable file keeps the key in use, with one warn line', async () => {
    const path = join(dir, 'api-key');
    writeFileSync(path, 'key-1\n');
    const keys: string[] = [];
    const calls = { n: 0 };
    const connection = { setApiKey: (key: string) => Promise.resolve(void keys.push(key)) };
    const { lines, logger } = log();
    const watch = watchApiKeyFile(connection, path, 'key-1', logger, 5);
    const counting = setInterval(() => calls.n++, 5);
    try {
      await reads(calls, 5);
      expect(keys).toEqual([]);
      const expiry = 2_000_000_000;
      const rotated = `e30.${Buffer.from(JSON.stringify({ exp: expiry })).toString('base64url')}.signature`;
      // As a rotation does (a secret's symlink swap): the whole new file at once, never a half-written one.
      writeFileSync(`${path}.new`, rotated);
      renameSync(`${path}.new`, path);
      await vi.waitFor(() => expect(keys).toEqual([rotated]));
      await reads(calls, 5);
      expect(keys).toEqual([rotated]);
      expect(lines).toEqual([
        {
          level: 'info',
          fields: { expiresAt: new Date(expiry * 1000).toISOString() },
          msg: 'Temporal API key reloaded from TEMPORAL_API_KEY_FILE',
        },
      ]);
      rmSync(path);
      await vi.waitFor(() => expect(lines).toHaveLength(2));
      await reads(calls, 5);
      expect(keys).toEqual([rotated]);
      expect(lines.slice(1)).toEqual([
        {
          level: 'warn',
          fields: { err: expect.stringMatching(/^cannot read TEMPORAL_API_KEY_FILE .*: ENOENT$/) as unknown },
          msg: 'cannot reload the Temporal API key; keeping the one in use',
        },
      ]);
    } finally {
      clearInterval(counting);
      watch.stop();
    }
  });

  it('warns once when a read of the file does not answer, and reads one at a time', async () => {
    const path = join(dir, 'api-key');
    execFileSync('mkfifo', [path]); // opening it for reading waits for a writer: a hung mount
    const keys: string[] = [];
    const connection = { setApiKey: (key: string) => Promise.resolve(void keys.push(key)) };
    const { lines, logger } = log();
    const watch = watchApiKeyFile(connection, path, 'key-1', logger, 5, 50);
    try {
      await vi.waitFor(() => expect(lines).toHaveLength(1));
      expect(lines[0]).toEqual({
        level: 'warn',
        fields: { err: `reading TEMPORAL_API_KEY_FILE (${path}) has not answered` },
        msg: 'cannot reload the Temporal API key; keeping the one in use',
      });
      writeFileSync(path, 'key-2'); // the writer comes: the pending read answers
      await vi.waitFor(() => expect(keys).toEqual(['key-2']));
    } finally {
      watch.stop();
    }
  });

  it('tries a key the connection did not take again, warning once', async () => {
    const path = join(dir, 'api-key');
    writeFileSync(path, 'key-2');
    let refusals = 0;
    const keys: string[] = [];
    const connection = {
      setApiKey: (key: string) =>
        ++refusals <= 3 ? Promise.reject(new Error('closed')) : Promise.resolve(void keys.push(key)),
    };
    const { lines, logger } = log();
    const watch = watchApiKeyFile(connection, path, 'key-1', logger, 5);
    try {
      await vi.waitFor(() => expect(keys).toEqual(['key-2']));
      expect(refusals).toBe(4);
      expect(lines.map(({ level, msg }) => [level, msg])).toEqual([
        ['warn', 'cannot use the reloaded Temporal API key'],
        ['info', 'Temporal API key reloaded from TEMPORAL_API_KEY_FILE'],
      ]);
    } finally {
      watch.stop();
    }
  });
});
