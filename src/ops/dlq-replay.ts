import amqplib, { type GetMessage } from 'amqplib';
import { republishOptions } from '../rabbitmq/dead-letters.js';
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { runAsProcess, runCommand, UsageError, type CliIo, type Command } from '../cli.js';
import { redactUrl } from '../config.js';
import { REASON_CODE_HEADER, REASON_HEADER, WORKFLOW_ID_HEADER } from '../rabbitmq/dead-letters.js';

/** Counts how often a message was replayed; kept (and incremented) on every replay. */
export const REPLAY_COUNT_HEADER = 'x-balance-sync-replays';
/** Headers our dead-letter path adds besides the x-balance-sync-* ones; dropped on replay too. */
const DEAD_LETTER_EXTRA_HEADERS = new Set(['x-original-queue', 'x-original-redelivered']);

export const USAGE = `Usage: npm run dlq:replay -- [--dry-run] [--count N] [--from QUEUE] [--to QUEUE]

Moves dead letters back onto the incoming queue once the cause is fixed: each message is
republished (body and properties unchanged, persistent) with the x-balance-sync-* reason headers
removed (${WORKFLOW_ID_HEADER} is kept) and ${REPLAY_COUNT_HEADER} incremented, and is acked on the dead-letter queue only after
the broker confirmed the republish. At most the number of messages waiting at the start are moved,
so messages that fail again and come back are not replayed twice in one run.

  --dry-run      list what would move and move nothing
  --count N      move at most N messages (oldest first)
  --from QUEUE   dead-letter queue (default: DEAD_LETTER_QUEUE, incoming_transactions.dead)
  --to QUEUE     destination (default: INCOMING_QUEUE, incoming_transactions)
  -h, --help     show this help

RABBITMQ_URL, DEAD_LETTER_QUEUE and INCOMING_QUEUE are read as by the app.
`;

export interface ReplayOptions {
  rabbitmqUrl: string;
  from: string;
  to: string;
  /** At most this many; undefined: every message waiting at the start. */
  count?: number | undefined;
  dryRun: boolean;
  /** One line per message and a summary (the CLI prints them on stdout). */
  log?: (line: string) => void;
}

export interface ReplayedMessage {
  messageId: string | undefined;
  reasonCode: string | undefined;
  reason: string | undefined;
  bytes: number;
  replays: number;
}

export interface ReplayResult {
  from: string;
  to: string;
  dryRun: boolean;
  /** Messages on the dead-letter queue when the run started. */
  waiting: number;
  /** Moved, or (dry run) that would move. */
  messages: ReplayedMessage[];
  moved: number;
}

export class ReplayError extends Error {
  override name = 'ReplayError';
}

/**
 * The headers a replayed message carries: reasons removed, replay count incremented, the workflow ID
 * kept (the bridge reuses it for a message without message_id, so two copies record one row).
 */
export function replayHeaders(headers: Record<string, unknown> | undefined): Record<string, unknown> {
  const kept = Object.entries(headers ?? {}).filter(
    ([key]) =>
      key === REPLAY_COUNT_HEADER ||
      key === WORKFLOW_ID_HEADER ||
      !(key.startsWith('x-balance-sync-') || DEAD_LETTER_EXTRA_HEADERS.has(key)),
  );
  const previous = Number(headers?.[REPLAY_COUNT_HEADER] ?? 0);
  return {
    ...Object.fromEntries(kept),
    [REPLAY_COUNT_HEADER]: (Number.isFinite(previous) ? previous : 0) + 1,
  };
}

function describe(message: GetMessage): ReplayedMessage {
  const headers = (message.properties.headers ?? {}) as Record<string, unknown>;
  const text = (value: unknown): string | undefined => {
    if (value === undefined || value === null) return undefined;
    if (typeof value === 'string') return value;
    if (Buffer.isBuffer(value)) return value.toString('utf8');
    return JSON.stringify(value);
  };
  return {
    messageId: text(message.properties.messageId),
    reasonCode: text(headers[REASON_CODE_HEADER]),
    reason: text(headers[REASON_HEADER]),
    bytes: message.content.length,
    replays: Number(headers[REPLAY_COUNT_HEADER] ?? 0) || 0,
  };
}

function line(index: number, verb: string, message: GetMessage, info: ReplayedMessage): string {
  const preview = message.content.subarray(0, 80).toString('utf8');
  return (
    `#${index} ${verb}: message_id=${info.messageId ?? '-'} code=${info.reasonCode ?? '-'}` +
    ` reason=${JSON.stringify(info.reason ?? '')} replays=${info.replays} bytes=${info.bytes}` +
    ` body=${JSON.stringify(preview)}${message.content.length > 80 ? '…' : ''}`
  );
}

/**
 * Moves (or, dry run, lists) up to `count` dead letters from `from` to `to`. Each move is: get,
 * republish on a confirm channel, wait for the confirm, then ack. A crash between the confirm and
 * the ack leaves the message on both queues (at least once); with a message_id the app ingests it
 * once. A dry run gets the messages without acking and returns them all, in order, at the end.
 */
export async function replayDeadLetters(options: ReplayOptions): Promise<ReplayResult> {
  const log = options.log ?? (() => undefined);
  if (options.from === options.to) throw new ReplayError('--from and --to name the same queue');
  const connection = await amqplib.connect(options.rabbitmqUrl, {
    clientProperties: { connection_name: 'balance-sync dlq-replay' },
  });
  try {
    // Broker-side errors (e.g. 404 for a missing queue) also reject the pending operation, which
    // reports them; without these listeners the 'error' events would crash the process.
    connection.on('error', () => undefined);
    const channel = await connection.createConfirmChannel();
    channel.on('error', () => undefined);
    let waiting: number;
    try {
      ({ messageCount: waiting } = await channel.checkQueue(options.from));
    } catch (error) {
      throw new ReplayError(`dead-letter queue ${options.from} not found: ${(error as Error).message}`);
    }
    await channel.assertQueue(options.to, { durable: true }); // as the producer and the bridge declare it
    const limit = Math.min(options.count ?? Number.POSITIVE_INFINITY, waiting);
    const result: ReplayResult = {
      from: options.from,
      to: options.to,
      dryRun: options.dryRun,
      waiting,
      messages: [],
      moved: 0,
    };

    for (let index = 1; index <= limit; index++) {
      const message = await channel.get(options.from, { noAck: false });
      if (!message) break; // someone else took the rest
      const info = describe(message);
      if (options.dryRun) {
        result.messages.push(info);
        log(line(index, 'would move', message, info));
        continue;
      }
      const { properties } = message;
      const publish = republishOptions(properties, replayHeaders(properties.headers));
      try {
        await new Promise<void>((resolve, reject) => {
          channel.sendToQueue(options.to, message.content, publish, (error: unknown) =>
            error ? reject(error instanceof Error ? error : new Error('republish not confirmed')) : resolve(),
          );
        });
      } catch (error) {
        // Not acked: the message goes back to the dead-letter queue when the channel closes.
        throw new ReplayError(
          `republish of message #${index} to ${options.to} failed after ${result.moved} moved: ${(error as Error).message}`,
        );
      }
      channel.ack(message);
      result.messages.push(info);
      result.moved++;
      log(line(index, 'moved', message, info));
    }

    if (options.dryRun) {
      channel.nackAll(true); // every message back, in its place
      log(
        `dry run: ${result.messages.length} of ${waiting} dead letter(s) on ${options.from} would move to ${options.to}; nothing was moved`,
      );
    } else {
      log(
        `moved ${result.moved} dead letter(s) from ${options.from} to ${options.to}; ${waiting - result.moved} were not moved`,
      );
    }
    await channel.close();
    return result;
  } finally {
    await connection.close().catch(() => undefined);
  }
}

const FLAGS = {
  'dry-run': { type: 'boolean' },
  count: { type: 'string' },
  from: { type: 'string' },
  to: { type: 'string' },
} as const;

/** `npm run dlq:replay`: the moves on stdout, one line each (see src/cli.ts for exit statuses). */
const dlqReplayCommand: Command<typeof FLAGS> = {
  name: 'dlq:replay',
  usage: USAGE,
  flags: FLAGS,
  parse(values) {
    if (values.count !== undefined && !/^\d+$/.test(values.count)) {
      throw new UsageError(`--count must be a whole number, got "${values.count}"`);
    }
    return values;
  },
  async run({ args: values, config, io }) {
    io.stdout(`rabbitmq ${redactUrl(config.RABBITMQ_URL)}\n`);
    await replayDeadLetters({
      rabbitmqUrl: config.RABBITMQ_URL,
      from: values.from || config.DEAD_LETTER_QUEUE,
      to: values.to || config.INCOMING_QUEUE,
      count: values.count === undefined ? undefined : Number(values.count),
      dryRun: values['dry-run'] ?? false,
      log: (text) => io.stdout(`${text}\n`),
    });
    return 0;
  },
};

/** The CLI: resolves to the exit status (0 done, 1 failed, 2 bad usage or configuration). */
export const runDlqReplayCli = (argv: string[], env: NodeJS.ProcessEnv, io: CliIo): Promise<number> =>
  runCommand(dlqReplayCommand, argv, env, io);

/** True when this file is the process's entry point (npm run dlq:replay), not an import. */
function invokedDirectly(): boolean {
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

if (invokedDirectly()) runAsProcess(dlqReplayCommand);
