// npm run balances -- --at <ISO-8601> [--key <id>_<name>] [--json]
// npm run balances -- --key <id>_<name> --from <ISO-8601> [--to <ISO-8601>] [--json]
import { runAsProcess, UsageError, type FlagValues } from '../cli.js';
import { redactUrl } from '../config.js';
import {
  balancesAt,
  historyGaps,
  keyChanges,
  unpublishedMinutes,
  NoPublicationError,
  parseInstant,
  type BalancesAt,
  type HistoryGap,
  type KeyChange,
} from '../history/balance-history.js';
import { createPool } from '../postgres/pools.js';

const USAGE = `Usage: npm run balances -- --at TIME [--key KEY] [--json]
       npm run balances -- --key KEY --from TIME [--to TIME] [--json]

What KeyDB held at TIME, from the balance history in Postgres: the last publication KeyDB applied at
or before it (by KeyDB's clock; its minute is printed: a minute that was not published is never
invented), with every key, or only KEY (<id>_<name>, e.g. 1_Visa). A TIME when a write may have been
applied without being recorded is refused as unknown (exit 1). With --from, every change of KEY from
--from to --to (default: now), both included, the minutes in that range that were not published, and
the times KeyDB's balances are unknown (gaps); "(removed)": the key was deleted. TIME is ISO 8601 with
a time zone, e.g. 2026-01-01T14:03:00Z.

  --at TIME     the instant asked about
  --key KEY     only this key
  --from TIME   list the changes of --key from this instant
  --to TIME     ... up to this instant (default: now)
  --json        JSON: {"minute","publishedAt","balances"} or {"key","from","to","changes","gaps","unknown"}
  -h, --help    show this help

DATABASE_URL is read from the environment and .env as by the app.
`;

function instant(flag: string, text: string | undefined): Date {
  const parsed = parseInstant(text);
  if (typeof parsed === 'string') throw new UsageError(`--${flag}: ${parsed}`);
  return parsed;
}

/** Rows of cells as columns padded to their widest cell. */
function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  return rows
    .map((row) =>
      row
        .map((cell, i) => cell.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

const minuteLabel = (minute: string | null) => minute ?? '- (written on demand, not a minute)';

function balancesText(answer: BalancesAt): string {
  const header = `minute        ${minuteLabel(answer.minute)}\npublished at  ${answer.publishedAt}\n\n`;
  const rows = Object.entries(answer.balances);
  if (rows.length === 0) return `${header}(no key)\n`;
  return `${header}${table([['KEY', 'VALUE'], ...rows])}\n`;
}

function gapsText(gaps: { from: string; to: string }[]): string {
  const lines = gaps.map((gap) => (gap.from === gap.to ? `  ${gap.from}\n` : `  ${gap.from} to ${gap.to}\n`));
  return lines.length > 0 ? `\nminutes not published (gaps):\n${lines.join('')}` : '';
}

function unknownText(gaps: HistoryGap[]): string {
  const lines = gaps.map(
    (gap) =>
      `  ${gap.from} to ${gap.to ?? '(the next recorded publication)'}` +
      ` (a write for ${gap.minute ?? 'no minute (on demand)'} not recorded)\n`,
  );
  return lines.length > 0
    ? `\nbalances unknown (a write that may have been applied, not recorded):\n${lines.join('')}`
    : '';
}

function changesText(changes: KeyChange[]): string {
  if (changes.length === 0) return '(no change in this range)\n';
  const rows = changes.map((c) => [c.minute ?? '-', c.publishedAt, c.value ?? '(removed)']);
  return `${table([['MINUTE', 'PUBLISHED AT', 'VALUE'], ...rows])}\n`;
}

interface Query {
  at?: Date;
  key?: string;
  from?: Date;
  to?: Date;
  json: boolean;
}

const FLAGS = {
  at: { type: 'string' },
  key: { type: 'string' },
  from: { type: 'string' },
  to: { type: 'string' },
  json: { type: 'boolean' },
} as const;

/** The flags as a query; throws UsageError on a bad combination or time (exit 2). */
function parseQuery(values: FlagValues<typeof FLAGS>): Query {
  if ((values.at === undefined) === (values.from === undefined))
    throw new UsageError('give --at, or --key with --from');
  if (values.from !== undefined && !values.key) throw new UsageError('--from needs --key');
  if (values.at !== undefined && values.to !== undefined)
    throw new UsageError('--to goes with --from, not --at');
  if (values.key === '') throw new UsageError('--key: empty');
  return {
    json: values.json ?? false,
    ...(values.key ? { key: values.key } : {}),
    ...(values.at !== undefined ? { at: instant('at', values.at) } : {}),
    ...(values.from !== undefined ? { from: instant('from', values.from) } : {}),
    ...(values.to !== undefined ? { to: instant('to', values.to) } : {}),
  };
}

async function answer(pool: ReturnType<typeof createPool>, query: Query): Promise<string> {
  if (query.at) {
    const balances = await balancesAt(pool, query.at, query.key);
    return query.json ? `${JSON.stringify(balances)}\n` : balancesText(balances);
  }
  const [key, from, to] = [query.key!, query.from!, query.to ?? new Date()];
  const [changes, gaps, unknown] = await Promise.all([
    keyChanges(pool, key, from, to),
    unpublishedMinutes(pool, from, to),
    historyGaps(pool, from, to),
  ]);
  const range = { key, from: from.toISOString(), to: to.toISOString(), changes, gaps, unknown };
  return query.json
    ? `${JSON.stringify(range)}\n`
    : changesText(changes) + gapsText(gaps) + unknownText(unknown);
}

runAsProcess({
  name: 'balances',
  usage: USAGE,
  flags: FLAGS,
  parse: parseQuery,
  async run({ args: query, config, io }) {
    const pool = createPool(config.DATABASE_URL, 'history', () => undefined);
    try {
      io.stdout(await answer(pool, query));
      return 0;
    } catch (error) {
      const { message } = error as Error;
      if (error instanceof NoPublicationError) throw error;
      throw new Error(`Postgres at ${redactUrl(config.DATABASE_URL)}: ${message}`);
    } finally {
      await pool.end().catch(() => undefined);
    }
  },
});
