// Small helpers shared by the benchmarks: progress on stderr, statistics, markdown tables, /proc sampling.
import type { ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism, cpus, totalmem } from 'node:os';

const started = Date.now();

const children = new Set<ChildProcess>();
/** Children are killed if this process exits with them still running (time limit, crash). */
export function trackChild(child: ChildProcess): void {
  children.add(child);
  child.once('exit', () => children.delete(child));
}
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

/** Progress goes to stderr, prefixed with seconds since start; figures go to stdout. */
export function progress(message: string): void {
  process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)}s] ${message}\n`);
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Rejects with `what` if `promise` does not settle within `ms`. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export interface Summary {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  min: number;
  mean: number;
}

export function summarize(values: number[]): Summary {
  const sorted = [...values].sort((a, b) => a - b);
  const mean = sorted.reduce((sum, value) => sum + value, 0) / (sorted.length || 1);
  return {
    n: sorted.length,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: sorted[sorted.length - 1] ?? Number.NaN,
    min: sorted[0] ?? Number.NaN,
    mean,
  };
}

export const median = (values: number[]) =>
  percentile(
    [...values].sort((a, b) => a - b),
    50,
  );

/** Formats a number for a table: integers as is, others with `digits` decimals. */
export function fmt(value: number | null | undefined, digits = 1): string {
  if (value === null || value === undefined || Number.isNaN(value)) return '–';
  return Number.isInteger(value) ? String(value) : value.toFixed(digits);
}

export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = rows.map((row) => row.map((cell) => (typeof cell === 'number' ? fmt(cell) : cell)));
  return [
    `| ${headers.join(' | ')} |`,
    `| ${headers.map(() => '---').join(' | ')} |`,
    ...cells.map((row) => `| ${row.join(' | ')} |`),
  ].join('\n');
}

/** Prints a markdown section to stdout. */
export function report(title: string, body: string): void {
  process.stdout.write(`\n### ${title}\n\n${body}\n`);
}

// ---- /proc sampling ----------------------------------------------------------------------------

const CLOCK_TICKS = 100; // getconf CLK_TCK on Linux x86-64

/** CPU seconds (user + system) a process has used so far, or undefined if it is gone. */
export function processCpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may contain spaces; the fields after it are space-separated.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}

/** Resident set size in MiB, or undefined if the process is gone. */
export function processRssMiB(pid: number): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
    return kb ? Number(kb) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

interface MachineTicks {
  total: number;
  idle: number;
  steal: number;
}

function machineTicks(): MachineTicks {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const [, ...values] = line.trim().split(/\s+/);
  const n = values.map(Number);
  // user nice system idle iowait irq softirq steal guest guest_nice (guest is counted in user)
  const total = n.slice(0, 8).reduce((sum, value) => sum + value, 0);
  return { total, idle: (n[3] ?? 0) + (n[4] ?? 0), steal: n[7] ?? 0 };
}

export interface CpuReport {
  seconds: number;
  /** CPU seconds used by each named process (or group) during the window. */
  processes: Record<string, number>;
  /** Whole machine: share of all cores busy, and share stolen by the hypervisor. */
  machineBusy: number;
  machineSteal: number;
  /** Peak RSS (MiB) seen for each sampled process. */
  peakRss: Record<string, number>;
}

/**
 * Measures CPU seconds of named processes over a window. Groups (e.g. Postgres backends) are given
 * as a function returning their current pids; each pid's own delta is summed. Samples every second.
 */
export class CpuMeter {
  private readonly first = new Map<string, Map<number, number>>();
  private readonly last = new Map<string, Map<number, number>>();
  private readonly rss = new Map<string, number>();
  private readonly machineStart = machineTicks();
  private readonly startMs = performance.now();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly targets: Record<string, () => number[] | Promise<number[]>>) {
    void this.sample();
    this.timer = setInterval(() => void this.sample(), 1000);
  }

  private async sample(): Promise<void> {
    for (const [name, pidsOf] of Object.entries(this.targets)) {
      let pids: number[];
      try {
        pids = await pidsOf();
      } catch {
        continue;
      }
      const first = this.first.get(name) ?? new Map<number, number>();
      const last = this.last.get(name) ?? new Map<number, number>();
      let rss = 0;
      for (const pid of pids) {
        const cpu = processCpuSeconds(pid);
        if (cpu === undefined) continue;
        if (!first.has(pid)) first.set(pid, cpu);
        last.set(pid, cpu);
        rss += processRssMiB(pid) ?? 0;
      }
      this.first.set(name, first);
      this.last.set(name, last);
      this.rss.set(name, Math.max(this.rss.get(name) ?? 0, rss));
    }
  }

  async stop(): Promise<CpuReport> {
    clearInterval(this.timer);
    await this.sample();
    const end = machineTicks();
    const total = end.total - this.machineStart.total || 1;
    const processes: Record<string, number> = {};
    for (const [name, last] of this.last) {
      const first = this.first.get(name)!;
      let sum = 0;
      for (const [pid, cpu] of last) sum += cpu - (first.get(pid) ?? cpu);
      processes[name] = sum;
    }
    return {
      seconds: (performance.now() - this.startMs) / 1000,
      processes,
      machineBusy: 1 - (end.idle - this.machineStart.idle) / total,
      machineSteal: (end.steal - this.machineStart.steal) / total,
      peakRss: Object.fromEntries(this.rss),
    };
  }
}

/** pids whose /proc/<pid>/comm starts with `name` (e.g. beam.smp for RabbitMQ). */
export function pidsByComm(name: string): number[] {
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .map(Number)
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/comm`, 'utf8').startsWith(name);
      } catch {
        return false;
      }
    });
}
export function machineDescription(): string {
  const model = cpus()[0]?.model ?? 'unknown';
  return `${availableParallelism()} cores (${model}), ${Math.round(totalmem() / 2 ** 30)} GiB`;
}

/** Reads `--name value` options; numbers are parsed, unknown options refused. */
export function options<T extends Record<string, string | number | boolean>>(defaults: T): T {
  const result: Record<string, string | number | boolean> = { ...defaults };
  const args = process.argv.slice(2);
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--help' || arg === '-h') {
      process.stderr.write(
        `options (defaults): ${Object.entries(defaults)
          .map(([k, v]) => `--${k} ${String(v)}`)
          .join(' ')}\n`,
      );
      process.exit(0);
    }
    const [flag, inline] = arg.split('=', 2) as [string, string | undefined];
    const key = flag.replace(/^--/, '');
    if (!flag.startsWith('--') || !(key in defaults)) throw new Error(`unknown option ${arg}`);
    const fallback = defaults[key];
    if (typeof fallback === 'boolean' && inline === undefined && !/^(true|false)$/.test(args[i + 1] ?? '')) {
      result[key] = true;
      continue;
    }
    const raw = inline ?? args[++i];
    if (raw === undefined) throw new Error(`${flag} needs a value`);
    if (typeof fallback === 'number') {
      const value = Number(raw);
      if (!Number.isFinite(value)) throw new Error(`${flag} must be a number`);
      result[key] = value;
    } else if (typeof fallback === 'boolean') result[key] = raw === 'true';
    else result[key] = raw;
  }
  return result as T;
}
