import { describe, expect, it } from 'vitest';
import { transportReason } from '../../src/temporal-connection.js';

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
