import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { withinCommandTimeout } from './fenced-write.js';

/**
 * The live app instances' own sync task queues, for the hedged minute write (src/workflows/sync-balances.ts):
 * a sorted set in KeyDB per sync task queue, each instance's queue scored with KeyDB's TIME when it last
 * renewed its lease. Leases are judged on KeyDB's clock alone, so a worker clock that is off changes
 * nothing; a SIGKILLed instance drops out within LEASE_MS.
 */
const REGISTRY_PREFIX = 'balance-sync:sync-instances:';
/** An instance renews every RENEW_MS; a queue not renewed for LEASE_MS is not live. */
export const RENEW_MS = 500;
export const LEASE_MS = 2_000;

// KEYS: the set. ARGV: the queue, the lease. Renews the queue and drops those whose lease ran out.
const RENEW_LUA = `
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return now`;

// KEYS: the set. ARGV: the lease. The queues renewed within it, oldest renewal first.
const LIVE_LUA = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')`;

const registryKey = (syncTaskQueue: string) => `${REGISTRY_PREFIX}${syncTaskQueue}`;

/** The queues whose instances renewed their lease within LEASE_MS, sorted by name. */
export async function liveInstanceQueues(keydb: Redis, syncTaskQueue: string): Promise<string[]> {
  const queues = (await withinCommandTimeout(
    keydb.eval(LIVE_LUA, 1, registryKey(syncTaskQueue), LEASE_MS),
  )) as string[];
  return [...queues].sort();
}

/**
 * Keeps `instanceQueue` listed as live until the returned stop is called (which unlists it). A failed
 * renewal is a warn line once until one succeeds again: the instance then drops out and the sync
 * falls back to one writer.
 */
export function registerInstanceQueue(
  keydb: Redis,
  syncTaskQueue: string,
  instanceQueue: string,
  log: Logger,
): () => Promise<void> {
  const key = registryKey(syncTaskQueue);
  let failing = false;
  const renew = async () => {
    try {
      await withinCommandTimeout(keydb.eval(RENEW_LUA, 1, key, instanceQueue, LEASE_MS));
      failing = false;
    } catch (error) {
      if (!failing) {
        log.warn(
          { err: (error as Error).message, instanceQueue },
          'could not renew this instance in the sync registry; the minute write is not hedged onto it',
        );
      }
      failing = true;
    }
  };
  void renew();
  const timer = setInterval(() => void renew(), RENEW_MS);
  return async () => {
    clearInterval(timer);
    await withinCommandTimeout(keydb.zrem(key, instanceQueue)).catch(() => undefined);
  };
}
