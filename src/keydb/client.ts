import { Redis } from 'ioredis';
import type { Logger } from 'pino';

/**
 * Every KeyDB command fails after this long without a reply (a hung, stopped or swapping server
 * keeps the connection open and answers nothing), so the sync's attempt fails and retries instead of
 * waiting for ever. A MULTI/EXEC of thousands of keys answers in milliseconds.
 */
export const KEYDB_COMMAND_TIMEOUT_MS = 1_000;
/** A connection (TCP plus handshake) that takes longer is dropped and retried. */
const KEYDB_CONNECT_TIMEOUT_MS = 2_000;

/** The app's KeyDB client: bounded commands, reconnects; a connection error is a warn line. */
export function createKeydbClient(url: string, log: Logger): Redis {
  const keydb = new Redis(url, {
    commandTimeout: KEYDB_COMMAND_TIMEOUT_MS,
    connectTimeout: KEYDB_CONNECT_TIMEOUT_MS,
    maxRetriesPerRequest: 2,
    enableOfflineQueue: true,
  });
  keydb.on('error', (error: Error) => log.warn({ err: error.message }, 'KeyDB connection error'));
  return keydb;
}

/** KeyDB's readiness: a PING round trip; the reason names a server that holds the socket but is silent. */
export async function keydbAnswers(keydb: Redis): Promise<string | undefined> {
  try {
    await keydb.ping();
    return undefined;
  } catch (error) {
    const message = (error as Error).message;
    return message === 'Command timed out'
      ? `no reply to PING within ${KEYDB_COMMAND_TIMEOUT_MS / 1000} s (hung, stopped or overloaded)`
      : message;
  }
}
