import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ConfigError } from '../../src/config.js';
import { temporalConnectOptions, transportReason } from '../../src/temporal-connection.js';

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
