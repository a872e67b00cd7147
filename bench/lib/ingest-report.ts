// The markdown tables of bench/ingest.ts, one function per table.
import {
  type CeilingCpuMs,
  eagerCeiling,
  localCeiling,
  mean,
  plainCeiling,
  rateOutsideHolds,
  type DrainRow,
} from './drain.js';
import type { CeilingRow } from './temporal-load.js';
import { fmt, report, table, type CpuReport } from './util.js';

const ratio = (a: number | null | undefined, b: number | null | undefined) =>
  a && b ? (a / b).toFixed(2) : '–';

const cpuPerMessage = (cpu: CpuReport, messages: number, name: string) =>
  ((cpu.processes[name] ?? 0) / messages) * 1000;

/** The processes a message costs CPU in, in the order of the CPU table's columns. */
const CPU_PROCESSES = ['app', 'temporal', 'postgresTemporal', 'postgres', 'rabbitmq'] as const;

const cpuColumns = (cpu: CpuReport, messages: number) => [
  ...CPU_PROCESSES.map((name) => cpuPerMessage(cpu, messages, name)),
  CPU_PROCESSES.reduce((sum, name) => sum + cpuPerMessage(cpu, messages, name), 0),
  cpuPerMessage(cpu, messages, 'postgresBackground'),
  `${(cpu.machineBusy * 100).toFixed(0)}%`,
  `${(cpu.machineSteal * 100).toFixed(1)}%`,
  fmt(cpu.peakRss.app ?? null, 0),
];

const range = (values: number[] | undefined) =>
  values && values.length > 0 ? values.map((value) => value.toFixed(1)).join(' / ') : '–';

/** A ceiling's CPU per workflow: server / its Postgres backends / bench process (client + worker). */
const ceilingCpu = (cpu: CeilingCpuMs | undefined, withPostgres: boolean) =>
  cpu
    ? [
        mean(cpu.temporal).toFixed(1),
        withPostgres ? mean(cpu.postgresTemporal).toFixed(1) : '–',
        mean(cpu.bench).toFixed(1),
      ].join(' / ')
    : '–';

export function reportCeiling(rows: CeilingRow[], cpu: CpuReport | undefined, after: number | undefined) {
  if (rows.length === 0) return;
  report(
    'Ceiling: empty workflow, start + wait for result (in-memory dev server)',
    table(
      [
        'concurrency',
        'eager start requested',
        'eagerly started',
        'workflows/s',
        'p50 ms',
        'p99 ms',
        'errors',
      ],
      rows.map((row) => [
        row.concurrency,
        String(row.eager),
        `${(row.eagerShare * 100).toFixed(0)}%`,
        row.rate,
        row.latency.p50,
        row.latency.p99,
        row.errors,
      ]),
    ) +
      (cpu
        ? `\n\nCPU during the ceiling runs: dev server ${fmt(cpu.processes.temporal)} s, bench process (client + worker) ${fmt(cpu.processes.bench)} s, over ${fmt(cpu.seconds)} s wall; machine busy ${(cpu.machineBusy * 100).toFixed(0)}%, steal ${(cpu.machineSteal * 100).toFixed(1)}%.`
        : '') +
      (after ? `\n\nSame best setting at the end of the in-memory runs: ${fmt(after)} workflows/s.` : ''),
  );
}

export function reportClosedLoops(micro: (string | number)[][], slots: (string | number)[][]) {
  if (micro.length > 0) {
    report(
      'Local activity vs normal activity vs batching (closed loop, eager start)',
      table(['variant', 'concurrency', 'workflows/s', 'rows/s', 'p50 ms', 'p99 ms', 'errors'], micro),
    );
  }
  if (slots.length > 0) {
    report(
      'Worker slots (IngestTransaction closed loop, 64 in flight)',
      table(['worker tuning', 'in flight', 'workflows/s', 'p50 ms', 'p99 ms'], slots),
    );
  }
}

/** Every drain against the ceilings measured beside it, and where its CPU went. */
export function reportDrains(
  drains: DrainRow[],
  baselineRate: number | undefined,
  messages: number,
  ceilingLengths: string,
) {
  if (drains.length === 0 && !baselineRate) return;
  const memoryFirst = drains.find((row) => row.server === 'in-memory' && localCeiling(row));
  report(
    'Backlog drain into Postgres, against the ceilings measured on the same Temporal server just before / just after it',
    table(
      [
        'run',
        'Temporal server',
        'messages',
        'msg/s (steady)',
        'spawn → first row ms',
        'one-local-activity ceiling wf/s (eager)',
        'empty ceiling wf/s (eager)',
        'empty ceiling wf/s (plain)',
        '**÷ one local activity** (goal ≥ 0.9)',
        'starts held for the sync s',
        '÷ one local activity, held time left out',
        '÷ empty eager',
        '÷ empty plain',
        '÷ in-memory one local activity',
        '÷ baseline',
      ],
      [
        ...(baselineRate
          ? [
              [
                'plain consumer (no Temporal)',
                '–',
                messages,
                baselineRate,
                '–',
                '–',
                '–',
                '–',
                '–',
                '–',
                '–',
                '–',
                '–',
                '–',
                '1.00',
              ],
            ]
          : []),
        ...drains.map((row) => [
          row.label,
          row.server,
          row.rows,
          row.rate,
          row.spawnToFirstRowMs,
          range(row.adjacent?.local),
          range(row.adjacent?.eager),
          range(row.adjacent?.plain),
          `**${ratio(row.rate, localCeiling(row))}**`,
          row.heldSeconds === null ? '–' : row.heldSeconds.toFixed(1),
          ratio(rateOutsideHolds(row), localCeiling(row)),
          ratio(row.rate, eagerCeiling(row)),
          ratio(row.rate, plainCeiling(row)),
          ratio(row.rate, memoryFirst ? localCeiling(memoryFirst) : null),
          ratio(row.rate, baselineRate),
        ]),
      ],
    ) +
      '\n\nEach ceiling: a closed loop (start + wait for the result) on the bench\'s own worker; "one local ' +
      'activity" is BenchLocalNoop (one no-op local activity with IngestTransaction\'s options: the least ' +
      'one IngestTransaction per message can cost). ' +
      ceilingLengths +
      ' "÷" columns use the mean of before and after. ' +
      '"÷ in-memory one local activity": against the in-memory server of this run (its first drain). ' +
      '"Starts held for the sync": the app\'s bridge_sync_held_seconds_total (BRIDGE_HOLD_FOR_SYNC: no new ' +
      'start from just before each minute\'s sync until it is written); "held time left out" divides the ' +
      "rows by the drain's time minus that, since the ceiling writes no minute.",
  );
  report(
    'Where the CPU goes during the drains (CPU ms per message)',
    table(
      [
        'run',
        'Temporal server',
        'app process(es)',
        'Temporal server process',
        "Temporal's Postgres backends (persistence + visibility)",
        "app's Postgres backends",
        'RabbitMQ',
        'sum of these',
        'Postgres background, machine-wide (WAL writer, checkpointer, autovacuum…)',
        'machine busy',
        'steal',
        'app peak RSS MiB',
        'peak Temporal wf-task backlog',
        'starts eagerly dispatched',
        'RabbitMQ ready at half the rows',
        'RabbitMQ empty → last row ms',
        'start bytes: input (of which original) / memo / summary',
        'beside it, CPU ms per workflow (server / its Postgres / bench process): one local activity',
        'same: empty workflow',
      ],
      drains.map((row) => {
        const withPostgres = (row.cpu.processes.postgresTemporal ?? 0) > 0;
        return [
          row.label,
          row.server,
          ...cpuColumns(row.cpu, row.rows),
          row.peakBacklog,
          row.eagerShare === null ? '–' : `${(row.eagerShare * 100).toFixed(0)}%`,
          fmt(row.queueDepthAtHalf, 0),
          fmt(row.queueEmptyToLastRowMs),
          row.payload
            ? `${row.payload.input} (${row.payload.original}) / ${row.payload.memo} / ${row.payload.summary}`
            : '–',
          ceilingCpu(row.adjacent?.localCpuMs, withPostgres),
          ceilingCpu(row.adjacent?.eagerCpuMs, withPostgres),
        ];
      }),
    ) +
      '\n\nFrom /proc, from the moment the app logs "consuming" to the last row. "Postgres background" ' +
      'serves every database of the local Postgres, so it belongs to this bench only on a quiet machine; ' +
      'it is not in the sum.',
  );
}

/** What the throttle's visibility count costs the dev server, measured after each server's drain. */
export interface CountCostRow {
  server: string;
  counts: number;
  latencyP50Ms: number;
  serverCpuMsPerCount: number;
  /** The backends of the server's visibility (and persistence) databases; null on a dev server. */
  postgresCpuMsPerCount: number | null;
  /** The throttle counts twice a second: server (+ its Postgres) CPU per message at the drain's rate. */
  serverCpuMsPerMessage: number;
}

export function reportCountCost(rows: CountCostRow[]) {
  if (rows.length === 0) return;
  report(
    "The throttle's bookkeeping: CountWorkflowExecutions (what it sends every 500 ms) in a closed loop after the drain",
    table(
      [
        'Temporal server',
        'counts',
        'p50 ms',
        'server CPU ms per count',
        "its Postgres backends' CPU ms per count",
        'server + its Postgres CPU ms per message at 2 counts/s',
      ],
      rows.map((row) => [
        row.server,
        row.counts,
        row.latencyP50Ms,
        row.serverCpuMsPerCount,
        fmt(row.postgresCpuMsPerCount, 2),
        row.serverCpuMsPerMessage.toFixed(2),
      ]),
    ),
  );
}

export function reportMemory(rows: (string | number)[][]) {
  if (rows.length === 0) return;
  report(
    'Where the peak RSS goes (MiB; main thread at its RSS peak, workflow threads at their own peaks)',
    table(
      [
        'run',
        'RSS',
        'main heap total',
        'main heap used',
        'external',
        'of which array buffers',
        'workflow threads heap total (peak, summed)',
        'rest (native)',
        'msg/s (steady)',
      ],
      rows,
    ),
  );
}

export function reportFixed(rows: (string | number)[][]) {
  if (rows.length === 0) return;
  report(
    'Fixed rates: publish → row committed (ledger ingested_at), in-memory dev server',
    table(
      [
        'rate msg/s',
        'messages',
        'missing',
        'p50 ms',
        'p90 ms',
        'p99 ms',
        'max ms',
        'target',
        'app RSS MiB (peak)',
        'machine busy',
      ],
      rows,
    ),
  );
}
