// The bearer-token side of scripts/temporal-cluster.sh with TEMPORAL_CLUSTER_AUTH=jwt: a throw-away
// RS256 signing key, the JWKS the server checks tokens against (jwtKeyProvider.keySourceURIs), and the
// tokens themselves (`permissions` claims for the server's default claim mapper). node:crypto only.
//
//   node scripts/temporal-cluster-jwt.mjs keys <dir>                  make <dir>/signing.key and <dir>/jwks/jwks.json once
//   node scripts/temporal-cluster-jwt.mjs sign <dir> <ttl s> <sub> <permission>...   print a token
//   node scripts/temporal-cluster-jwt.mjs serve <dir> <port>          serve <dir>/jwks/jwks.json on 127.0.0.1:<port>
//
// The server fetches the JWKS over HTTP (Go's http.Get: no file:// URIs) at start and every
// refreshInterval; the file is read at each request, so a key removed from it is refused after the
// next refresh.
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { Buffer } from 'node:buffer';
import { join } from 'node:path';
import process from 'node:process';

const [command, dir, ...rest] = process.argv.slice(2);
const keyFile = () => join(dir, 'signing.key');
const jwksFile = () => join(dir, 'jwks', 'jwks.json');
const base64url = (value) => Buffer.from(value).toString('base64url');
const say = (line) => process.stdout.write(`${line}\n`);
const fail = (line) => {
  process.stderr.write(`temporal-cluster-jwt.mjs: ${line}\n`);
  process.exit(2);
};

function keys() {
  if (existsSync(keyFile()) && existsSync(jwksFile())) return;
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = publicKey.export({ format: 'jwk' });
  // RFC 7638 thumbprint: a key id that names this key and no other.
  const kid = createHash('sha256')
    .update(JSON.stringify({ e: jwk.e, kty: jwk.kty, n: jwk.n }))
    .digest('base64url');
  mkdirSync(join(dir, 'jwks'), { recursive: true, mode: 0o700 });
  writeFileSync(keyFile(), privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
  writeFileSync(jwksFile(), JSON.stringify({ keys: [{ ...jwk, kid, alg: 'RS256', use: 'sig' }] }) + '\n');
}

function signToken(ttlSeconds, subject, permissions) {
  const privateKey = createPrivateKey(readFileSync(keyFile()));
  const { kid } = JSON.parse(readFileSync(jwksFile(), 'utf8')).keys.find(
    (key) => key.n === createPublicKey(privateKey).export({ format: 'jwk' }).n,
  );
  const now = Math.floor(Date.now() / 1000);
  const header = base64url(JSON.stringify({ alg: 'RS256', typ: 'JWT', kid }));
  const claims = base64url(
    JSON.stringify({ sub: subject, permissions, iat: now, exp: now + Number(ttlSeconds) }),
  );
  const signature = sign('sha256', Buffer.from(`${header}.${claims}`), privateKey).toString('base64url');
  return `${header}.${claims}.${signature}`;
}

function serve(port) {
  const server = createServer((request, response) => {
    if (request.method !== 'GET' || request.url !== '/jwks.json') {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { 'content-type': 'application/json' }).end(readFileSync(jwksFile()));
  });
  // Stopped by SIGTERM's default action (temporal-cluster.sh stop): it holds nothing to flush.
  server.listen(Number(port), '127.0.0.1', () => say(`serving ${jwksFile()} on 127.0.0.1:${port}`));
}

if (!dir) fail('usage: temporal-cluster-jwt.mjs keys|sign|serve <dir> ...');
if (command === 'keys') keys();
else if (command === 'sign') {
  const [ttl, subject, ...permissions] = rest;
  say(signToken(ttl, subject, permissions));
} else if (command === 'serve') serve(rest[0]);
else fail(`unknown command ${command}`);
