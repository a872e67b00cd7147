import type { Redis } from 'ioredis';
import pTimeout from 'p-timeout';
import { KEYDB_COMMAND_TIMEOUT_MS } from './client.js';

/**
 * The fence: a hash in KeyDB beside the balance keys, `minute` (epoch ms of the newest minute written),
 * `writer` (the attempt that wrote it) and `written_at` (KeyDB's TIME then, epoch ms). Balance keys are
 * `<id>_<provider_name>` with an integer id, so nothing starting `balance-sync:` can be one of them;
 * a reader that lists every key skips these.
 */
export const FENCE_KEY = 'balance-sync:published-minute';

// One script, so the check and the write are one atomic step on the server whatever the network does
// to the bytes. KEYS: the fence, then the keys to set, then the keys to delete. ARGV: how many keys to
// set, the minute (or '' for an on-demand write), the newest minute the write may follow (its minute,
// or when an on-demand run was scheduled), the deadline on KeyDB's clock, the writer, then the values.
// redis.call raises on any refusal (OOM, READONLY), and a server refuses a script's first write only,
// before anything is written. TIME before a write needs effects replication: the default since Redis 5
// (and in KeyDB 6), switched on by the first line before that (a no-op, or absent, after).
const FENCED_WRITE_LUA = `
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local fence = redis.call('HMGET', KEYS[1], 'minute', 'writer')
local newest = tonumber(fence[1])
local minute = tonumber(ARGV[2])
if newest and newest > tonumber(ARGV[3]) then return {'stale', newest, now} end
if minute and newest == minute and fence[2] ~= ARGV[5] then return {'already', newest, now} end
if now > tonumber(ARGV[4]) then return {'past_deadline', newest or false, now} end
local sets = tonumber(ARGV[1])
for first = 1, sets, 1000 do
  local args = {}
  for i = first, math.min(first + 999, sets) do
    args[#args + 1] = KEYS[1 + i]
    args[#args + 1] = ARGV[5 + i]
  end
  redis.call('MSET', unpack(args))
end
for first = sets + 2, #KEYS, 1000 do
  redis.call('DEL', unpack(KEYS, first, math.min(first + 999, #KEYS)))
end
if minute then redis.call('HSET', KEYS[1], 'minute', ARGV[2], 'writer', ARGV[5], 'written_at', now) end
return {'applied', newest or false, now}`;

const COMMAND = 'balanceSyncFencedWrite';

export interface FencedWrite {
  /** The minute this write publishes, epoch ms; null for an on-demand write, which leaves the fence. */
  minuteMs: number | null;
  /** Refused if the fence holds a minute after this (the minute itself, or when an on-demand run was scheduled). */
  notBeforeMs: number;
  /** Refused once KeyDB's TIME is past this, epoch ms on KeyDB's own clock. */
  deadlineKeydbMs: number;
  /** Who writes (run, activity, attempt): the same minute from another writer is not written twice. */
  writer: string;
  set: { key: string; value: string }[];
  del: string[];
}

/**
 * What KeyDB did: `applied`; `already`, this minute was written by another writer and is left as it is;
 * `stale`, a newer minute is there; `past_deadline`, it arrived after its deadline. Only `applied` wrote.
 * `fenceMinuteMs` is the fence's minute before this write (null: none); `keydbNowMs` is KeyDB's TIME.
 */
export interface FenceOutcome {
  outcome: 'applied' | 'already' | 'stale' | 'past_deadline';
  fenceMinuteMs: number | null;
  keydbNowMs: number;
}

type Scripted = Redis & { [COMMAND](...args: (string | number)[]): Promise<[string, number | null, number]> };

const writers = new WeakMap<Redis, Redis>();

/**
 * `keydb`'s connection for the sync's writes (one per client, opened on first use), without the
 * client's command timeout: the caller bounds each wait itself and keeps listening, so it hears what
 * KeyDB did with a write it gave up on. A write in flight when the connection drops is never sent
 * again: the answer heard is always that of its only run (a resent copy could be refused while the
 * first was applied), and one never heard leaves its note, a gap in the balance history. It closes
 * when `keydb` does. Its connection errors are not logged: `keydb` reports the same server's.
 */
export function fencedWriterFor(keydb: Redis): Redis {
  let writer = writers.get(keydb);
  if (!writer) {
    writer = keydb.duplicate({ commandTimeout: undefined, autoResendUnfulfilledCommands: false });
    writer.on('error', () => undefined);
    writer.defineCommand(COMMAND, { lua: FENCED_WRITE_LUA });
    const opened = writer;
    keydb.once('end', () => opened.disconnect());
    writers.set(keydb, writer);
  }
  return writer;
}

/** Sends one fenced write (EVALSHA, EVAL when the server lacks the script) and returns what KeyDB did. */
export async function writeFenced(writer: Redis, write: FencedWrite): Promise<FenceOutcome> {
  const keys = [FENCE_KEY, ...write.set.map((entry) => entry.key), ...write.del];
  const [outcome, fenceMinuteMs, keydbNowMs] = await (writer as Scripted)[COMMAND](
    keys.length,
    ...keys,
    write.set.length,
    write.minuteMs ?? '',
    write.notBeforeMs,
    write.deadlineKeydbMs,
    write.writer,
    ...write.set.map((entry) => entry.value),
  );
  return { outcome: outcome as FenceOutcome['outcome'], fenceMinuteMs: fenceMinuteMs ?? null, keydbNowMs };
}

/**
 * KeyDB's clock minus this process's, from one TIME round trip (which also warms the connection):
 * `uncertaintyMs` is half that round trip. Fails like a command timeout after KEYDB_COMMAND_TIMEOUT_MS.
 */
export async function keydbClockOffset(writer: Redis): Promise<{ offsetMs: number; uncertaintyMs: number }> {
  const sent = Date.now();
  const [seconds, micros] = await withinCommandTimeout(writer.time());
  const received = Date.now();
  const keydbMs = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
  return { offsetMs: keydbMs - (sent + received) / 2, uncertaintyMs: (received - sent) / 2 };
}

/** The command's reply, or the error any other KeyDB command gives after KEYDB_COMMAND_TIMEOUT_MS. */
export function withinCommandTimeout<T>(reply: Promise<T>): Promise<T> {
  return pTimeout(reply, {
    milliseconds: KEYDB_COMMAND_TIMEOUT_MS,
    message: new Error('Command timed out'),
  });
}
