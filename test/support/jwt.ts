import { createPrivateKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** An RS256 JWT (what Temporal's default claim mapper reads), signed with node:crypto. */
export function signJwt(key: KeyObject, kid: string, claims: Record<string, unknown>): string {
  const part = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const signed = `${part({ alg: 'RS256', typ: 'JWT', kid })}.${part(claims)}`;
  return `${signed}.${sign('sha256', Buffer.from(signed), key).toString('base64url')}`;
}

/**
 * The throw-away signing key of a cluster started with TEMPORAL_CLUSTER_AUTH=jwt (its state directory's
 * jwt/), and a key of nobody's with the same key id: what a forged or foreign token is signed with.
 */
export function clusterSigningKeys(stateDir: string) {
  const jwks = JSON.parse(readFileSync(join(stateDir, 'jwt', 'jwks', 'jwks.json'), 'utf8'));
  return {
    kid: jwks.keys[0].kid as string,
    key: createPrivateKey(readFileSync(join(stateDir, 'jwt', 'signing.key'))),
    foreign: generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey,
  };
}
